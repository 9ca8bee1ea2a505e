"""File input/output around the SLAM model: spectra arrays in, label catalogues out.

Used by ``mdslam train`` and ``mdslam predict``.  Accepted spectra files:

* ``.npz`` with ``flux`` (n_spec, n_pix) or (n_pix,), optional ``ivar`` (same
  shape; or ``flux_error``), ``wavelength`` (or ``wave``), ``id`` (or ``ids``);
* a FITS binary table with a vector column ``FLUX`` (and ``IVAR`` or
  ``FLUX_ERROR``, optional ``ID``; wavelength in a ``WAVELENGTH`` vector
  column, header array, or a ``WAVELENGTH`` image HDU);
* LAMOST or BOSS spectrum files (``fmt="lamost"``/``"boss"``), read by
  :mod:`mdslam.spectra` and put onto the model grid with
  :func:`mdslam.preprocess.preprocess` (rest frame, rebin, masks, pseudo-continuum).

Spectra given as arrays must already be normalised and on the model's grid.
Both are checked (:mod:`mdslam.checks`): array files stacked for training must
share one grid, a file whose ``wavelength`` differs from the model grid by more
than :data:`mdslam.checks.GRID_TOLERANCE` pixels (shifted, reversed, other
length) is refused when labelling, and a spectrum whose median flux is far from
the training spectra's gets ``LabelFlag.NOT_NORMALISED``. Files without a
wavelength array cannot be checked against the grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from . import checks

__all__ = ["SpectraArrays", "read_spectra_arrays", "read_spectra_files"]


@dataclass
class SpectraArrays:
    """Flux arrays of one file.

    Attributes
    ----------
    flux : (n_spec, n_pix) array, or a list of 1-D arrays if files differ in length.
    ivar : same shape, or None.
    wavelength : (n_pix,) array or None.
    ids : (n_spec,) str array.
    files : (n_spec,) str array, source file of each row.
    snr : (n_spec,) array or None (from the reader's metadata when known).
    """

    flux: list | np.ndarray
    ivar: list | np.ndarray | None
    wavelength: np.ndarray | None
    ids: np.ndarray
    files: np.ndarray
    snr: np.ndarray | None = None
    errors: list[str] = field(default_factory=list)


def _pick(names, *cands):
    low = {n.lower(): n for n in names}
    for c in cands:
        if c in low:
            return low[c]
    return None


def read_spectra_arrays(path) -> SpectraArrays:
    """Read one ``.npz`` or FITS-table file of flux arrays (see the module docstring).

    Raises
    ------
    ValueError
        The file has no flux array, or shapes disagree (message names the file).
    """
    path = Path(path)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: np.asarray(z[k]) for k in z.files}
        except Exception as exc:
            raise ValueError(f"{path}: cannot be read as an npz of arrays ({type(exc).__name__})") from exc
        kf = _pick(d, "flux")
        if kf is None:
            raise ValueError(f"{path}: no 'flux' array (has {sorted(d)})")
        flux = np.atleast_2d(d[kf].astype(float))
        ki, ke = _pick(d, "ivar"), _pick(d, "flux_error", "error", "err")
        ivar = None
        if ki is not None:
            ivar = np.atleast_2d(d[ki].astype(float))
        elif ke is not None:
            err = np.atleast_2d(d[ke].astype(float))
            with np.errstate(divide="ignore", invalid="ignore"):
                ivar = np.where(np.isfinite(err) & (err > 0), 1.0 / err**2, 0.0)
        kw = _pick(d, "wavelength", "wave")
        wave = None if kw is None else np.asarray(d[kw], float).ravel()
        kid = _pick(d, "id", "ids")
        ids = (np.asarray(d[kid]).astype(str).ravel() if kid is not None
               else np.array([f"{path.name}:{i}" for i in range(flux.shape[0])]))
    else:
        with fits.open(path, memmap=False) as hdul:
            tab_hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU)
                            and _pick(h.columns.names, "flux") is not None), None)
            if tab_hdu is None:
                raise ValueError(f"{path}: no FITS table with a FLUX column; for LAMOST/BOSS "
                                 "spectrum files use --format lamost|boss")
            t = Table(tab_hdu.data)
            wave = None
            if "WAVELENGTH" in hdul and not isinstance(hdul["WAVELENGTH"], fits.BinTableHDU):
                wave = np.asarray(hdul["WAVELENGTH"].data, float).ravel()
        names = t.colnames
        flux = np.atleast_2d(np.asarray(t[_pick(names, "flux")], float))
        ki, ke = _pick(names, "ivar"), _pick(names, "flux_error", "error")
        ivar = None
        if ki is not None:
            ivar = np.atleast_2d(np.asarray(t[ki], float))
        elif ke is not None:
            err = np.atleast_2d(np.asarray(t[ke], float))
            with np.errstate(divide="ignore", invalid="ignore"):
                ivar = np.where(np.isfinite(err) & (err > 0), 1.0 / err**2, 0.0)
        kw = _pick(names, "wavelength", "wave")
        if kw is not None:
            wave = np.asarray(t[kw][0], float).ravel()
        kid = _pick(names, "id", "obsid", "source_id", "gaiaedr3_source_id", "apogee_id")
        ids = (np.asarray(t[kid]).astype(str) if kid is not None
               else np.array([f"{path.name}:{i}" for i in range(flux.shape[0])]))
    if ivar is not None and ivar.shape != flux.shape:
        raise ValueError(f"{path}: ivar shape {ivar.shape} != flux shape {flux.shape}")
    if len(ids) != flux.shape[0]:
        raise ValueError(f"{path}: {len(ids)} ids for {flux.shape[0]} spectra")
    return SpectraArrays(flux=flux, ivar=ivar, wavelength=wave, ids=ids,
                         files=np.array([path.name] * flux.shape[0]))


def read_spectra_files(paths, fmt: str = "auto", grid: np.ndarray | None = None,
                       progress: bool = True) -> SpectraArrays:
    """Read many files into one :class:`SpectraArrays`; a file that fails is reported, not fatal.

    Parameters
    ----------
    paths : sequence of path
    fmt : {"auto", "arrays", "lamost", "boss"}
        ``auto``/``arrays``: npz / FITS tables of flux arrays.  ``lamost``/``boss``:
        spectrum files, preprocessed onto ``grid`` (required then).
    grid : (n_pix,) array, optional
        Model wavelength grid, for LAMOST/BOSS preprocessing.
    progress : bool
        Progress bar over files.

    Returns
    -------
    SpectraArrays whose ``flux``/``ivar`` are lists of 1-D arrays (files may
    disagree in length: the model flags wrong lengths), and ``errors`` lists
    ``"file: problem"`` for unreadable files (each also gets one row, flux
    empty, so it appears flagged in the catalogue).

    Raises
    ------
    mdslam.checks.InputError
        Two array files carry different wavelength grids (they cannot be
        stacked pixel by pixel); the message names the file.
    """
    paths = [Path(p) for p in paths]
    if fmt in ("lamost", "boss"):
        from . import preprocess, spectra
        if grid is None:
            raise ValueError("LAMOST/BOSS input needs the model wavelength grid")
        reader = spectra.read_lamost if fmt == "lamost" else spectra.read_boss
        sp = reader([str(p) for p in paths])
        sp = preprocess.preprocess(sp, grid=np.asarray(grid, float), progress=progress)
        meta = sp.meta
        errors = [f"{f}: {r}" for f, r, fl in zip(meta["file"], meta["flag_reason"], meta["flag"], strict=True)
                  if fl]
        return SpectraArrays(flux=list(sp.flux), ivar=list(sp.ivar), wavelength=np.asarray(sp.wavelength),
                             ids=np.asarray(meta["id"]).astype(str), files=np.asarray(meta["file"]).astype(str),
                             snr=np.asarray(meta["snr"], float), errors=errors)
    if fmt not in ("auto", "arrays"):
        raise ValueError(f"unknown spectra format {fmt!r}")
    flux, ivar, ids, files, errors = [], [], [], [], []
    wave = None
    any_ivar = False
    it = paths
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(paths, desc="reading spectra", unit="file")
    parts = []
    for p in it:
        try:
            a = read_spectra_arrays(p)
        except Exception as exc:  # noqa: BLE001 - a bad file is reported, the batch goes on
            errors.append(f"{p}: {exc}")
            parts.append((None, p))
            continue
        parts.append((a, p))
        any_ivar |= a.ivar is not None
        if wave is None and a.wavelength is not None:
            wave = a.wavelength
    good = [(a, p) for a, p in parts if a is not None]
    checks.check_same_grid([a.wavelength for a, _ in good], [p.name for _, p in good])
    for a, p in parts:
        if a is None:
            flux.append(np.zeros(0))
            ivar.append(np.zeros(0))
            ids.append(p.name)
            files.append(p.name)
            continue
        for i in range(a.flux.shape[0]):
            flux.append(a.flux[i])
            ivar.append(a.ivar[i] if a.ivar is not None else np.full_like(a.flux[i], np.inf))
        ids.extend(a.ids.tolist())
        files.extend(a.files.tolist())
    return SpectraArrays(flux=flux, ivar=ivar if any_ivar else None, wavelength=wave,
                         ids=np.asarray(ids, str), files=np.asarray(files, str), errors=errors)
