"""Spectral model grids as data: readers, convolution to a survey's resolution, rebinning, normalisation.

A :class:`ModelGrid` holds the spectra of a sparse grid of stellar labels
(Teff, [M/H], optionally log g) on one wavelength grid, with the resolving
power they have. Two grids come through the same code path:

* **BT-Settl (CIFIST)** model atmospheres (Allard et al. 2012) as served by the
  SVO Theoretical Spectra Web Server (archive mode, :func:`btsettl_grid`).
  Li et al. (2021, sec. 4.1.2) train their SLAM_0 on this grid: 2200-7000 K in
  100 K, [M/H] -1.0 to 0.0 in 0.5 dex, log g 2.5-5.5 in 0.5 dex.
* **the mock template grid** (offline, :func:`mock_grid`): the noiseless
  semi-empirical spectra of :class:`mdslam.mock.MockSurvey` (interpolated from
  real SDSS M dwarf templates) at a sparse set of (Teff, [M/H]) nodes, at the
  templates' resolving power R = 2000. It is a *mock*, not a model atmosphere,
  and it has no log g dependence.

:func:`to_survey` takes either to a survey: a Gaussian line-spread function
that brings the grid's resolving power down to the survey's (LAMOST R ~ 1800,
BOSS R ~ 2000; :data:`mdslam.mock.SURVEYS`), flux-conserving rebinning onto the
survey wavelength grid and the spline pseudo-continuum normalisation that the
observed spectra get (:func:`mdslam.preprocess.preprocess`, same parameters).

The SVO file format (one ASCII file per model)::

    # BT-Settl CIFIST ...                         (free text)
    # teff = 3000 K (value for the effective temperature for the model. ...)
    # logg = 5 log(cm/s2) (value for Log(G) for the model.)
    # meta = 0  (value for the Metallicity for the model.)
    # column 1: WAVELENGTH (ANGSTROM), Wavelength in Angstrom
    # column 2: FLUX (ERG/CM2/S/A), Flux in erg/cm2/s/A
          4000.05   1.234e+05
          ...

The grid's index is the SSA service ``<root>/ssap.php?model=<model>`` (a
VOTable, one row per model, whose access reference ends in ``fid=<n>``), and a
spectrum is ``<root>/ssap.php?model=<model>&fid=<n>&format=ascii``. This is the
layout documented by the SVO server and read the same way by public SVO
clients (e.g. ``dustapprox.io.svo``); the replay test serves files of this
form. The root is ``http://svo2.cab.inta-csic.es/theory/newov2`` unless
``MDSLAM_SVO_URL`` says otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Table
from numpy.typing import ArrayLike
from scipy.ndimage import gaussian_filter1d

from . import preprocess as _pre
from .spectra import Spectra

__all__ = [
    "ModelGrid",
    "ModelGridError",
    "FWHM_TO_SIGMA",
    "SVO_MODEL",
    "LI2021_BTSETTL_NODES",
    "SURVEY_WAVELENGTH",
    "read_svo_spectrum",
    "parse_svo_index",
    "svo_index",
    "btsettl_grid",
    "mock_grid",
    "lsf_sigma_kms",
    "convolve_to_resolution",
    "to_survey",
]

C_KMS = _pre.C_KMS
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
"""sigma / FWHM of a Gaussian."""

SVO_MODEL = "bt-settl-cifist"
"""SVO Theoretical Spectra model key of the BT-Settl CIFIST grid."""

SVO_DEFAULT_URL = "http://svo2.cab.inta-csic.es/theory/newov2"

SURVEY_WAVELENGTH = dict(start=6147.0, stop=8888.0, n=1596)
"""Default output grid of :func:`to_survey`: 1596 log-lambda pixels, 6147-8888 A (the LAMOST
track's grid, on which the real LAMOST spectra are labelled)."""

LI2021_BTSETTL_NODES = {
    "teff": (2200.0, 7000.0, 100.0),
    "m_h": (-1.0, 0.0, 0.5),
    "logg": (2.5, 5.5, 0.5),
}
"""Li et al. (2021) sec. 4.1.2: the BT-Settl training grid, (start, stop, step) per label."""


class ModelGridError(ValueError):
    """A model grid file or index cannot be read; the message names it."""


@dataclass
class ModelGrid:
    """Spectra of a grid of labels on one wavelength grid.

    Attributes
    ----------
    wavelength : ndarray, shape (n_pix,)
        Vacuum wavelength, Angstrom, increasing.
    flux : ndarray, shape (n_model, n_pix)
        Flux density (any unit before :func:`to_survey`; normalised after).
    labels : astropy.table.Table
        One row per model: the label columns named in ``label_names``.
    label_names : list of str
        E.g. ``["teff", "m_h"]`` or ``["teff", "logg", "m_h"]``.
    resolution : float
        Resolving power lambda / FWHM of the spectra (``inf``: not degraded).
    name : str
        Short name (``"mock"``, ``"btsettl"``).
    provenance : str
        One line for captions: what the spectra are and where they come from.
    ivar : ndarray, shape (n_model, n_pix), optional
        Inverse variance after :func:`to_survey` (0 on masked pixels).
    """

    wavelength: np.ndarray
    flux: np.ndarray
    labels: Table
    label_names: list[str]
    resolution: float
    name: str
    provenance: str
    ivar: np.ndarray | None = None
    label_units: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.wavelength = np.asarray(self.wavelength, float)
        self.flux = np.atleast_2d(np.asarray(self.flux, float))
        if self.flux.shape[1] != self.wavelength.size:
            raise ModelGridError(f"grid {self.name}: flux has {self.flux.shape[1]} pixels, "
                                 f"wavelength {self.wavelength.size}")
        if len(self.labels) != self.flux.shape[0]:
            raise ModelGridError(f"grid {self.name}: {len(self.labels)} label rows for "
                                 f"{self.flux.shape[0]} spectra")
        if not self.label_units:
            self.label_units = [str(self.labels[c].unit or "") for c in self.label_names]

    def __len__(self) -> int:
        return self.flux.shape[0]

    @property
    def y(self) -> np.ndarray:
        """Labels as an (n_model, n_label) float array, columns in ``label_names`` order."""
        return np.column_stack([np.asarray(self.labels[c], float) for c in self.label_names])

    def select(self, **ranges: tuple[float, float]) -> ModelGrid:
        """The models whose labels lie in closed ranges, e.g. ``select(teff=(2600, 4600))``."""
        keep = np.ones(len(self), bool)
        for name, (lo, hi) in ranges.items():
            v = np.asarray(self.labels[name], float)
            keep &= (v >= lo - 1e-9) & (v <= hi + 1e-9)
        if not keep.any():
            raise ModelGridError(f"grid {self.name}: no model inside {ranges}")
        return ModelGrid(self.wavelength, self.flux[keep], self.labels[keep], list(self.label_names),
                         self.resolution, self.name, self.provenance,
                         None if self.ivar is None else self.ivar[keep], list(self.label_units))


# --------------------------------------------------------------------------- #
# the SVO format
# --------------------------------------------------------------------------- #
_PARAM_RE = re.compile(r"^#\s*(\w+)\s*=\s*([-+0-9.eE]+)")
_COLUMN_RE = re.compile(r"^#\s*column\s*(\d+)\s*:\s*(\w+)\s*\(([^)]*)\)", re.IGNORECASE)


def read_svo_spectrum(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Read one SVO Theoretical Spectra ASCII file (format in the module docstring).

    Parameters
    ----------
    path : str or Path
        The file (plain text, or gzip-compressed).

    Returns
    -------
    wavelength : ndarray, shape (n,)
        Angstrom, sorted increasing.
    flux : ndarray, shape (n,)
        erg s^-1 cm^-2 A^-1 (as the file states).
    params : dict
        Header parameters (``teff`` [K], ``logg`` [dex], ``meta`` [dex], ...).

    Raises
    ------
    ModelGridError
        Naming the file: unreadable, no WAVELENGTH/FLUX columns, units other
        than Angstrom, or fewer than 10 finite rows.
    """
    import gzip

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8", "replace")
    except OSError as exc:
        raise ModelGridError(f"{path}: cannot read ({exc})") from exc
    params: dict[str, float] = {}
    columns: dict[int, tuple[str, str]] = {}
    rows: list[str] = []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            m = _COLUMN_RE.match(s)
            if m:
                columns[int(m.group(1))] = (m.group(2).upper(), m.group(3).strip().upper())
                continue
            m = _PARAM_RE.match(s)
            if m:
                params[m.group(1).lower()] = float(m.group(2))
            continue
        rows.append(s)
    if columns:
        names = [columns[k][0] for k in sorted(columns)]
        if "WAVELENGTH" not in names or "FLUX" not in names:
            raise ModelGridError(f"{path}: no WAVELENGTH and FLUX columns in the header ({names})")
        iw, jf = names.index("WAVELENGTH"), names.index("FLUX")
        unit = columns[sorted(columns)[iw]][1]
        if unit not in ("ANGSTROM", "A", "AA"):
            raise ModelGridError(f"{path}: wavelength unit {unit!r}, expected ANGSTROM")
    else:
        iw, jf = 0, 1
    try:
        data = np.loadtxt(rows, ndmin=2) if rows else np.empty((0, 2))
    except ValueError as exc:
        raise ModelGridError(f"{path}: data rows are not numbers ({exc})") from exc
    if data.shape[1] <= max(iw, jf):
        raise ModelGridError(f"{path}: {data.shape[1]} data columns, header names {max(iw, jf) + 1}")
    wave, flux = data[:, iw], data[:, jf]
    ok = np.isfinite(wave) & np.isfinite(flux)
    if ok.sum() < 10:
        raise ModelGridError(f"{path}: {int(ok.sum())} finite rows (an error page or a truncated file?)")
    wave, flux = wave[ok], flux[ok]
    order = np.argsort(wave, kind="stable")
    wave, flux = wave[order], flux[order]
    keep = np.concatenate([[True], np.diff(wave) > 0])
    return wave[keep], flux[keep], params


_TR_RE = re.compile(r"<TR[^>]*>(.*?)</TR>", re.IGNORECASE | re.DOTALL)
_FID_RE = re.compile(r"fid=(\d+)")
_KV_RE = re.compile(r"\b(teff|logg|meta|alpha)\s*[:=]\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)")


def parse_svo_index(text: str, source: str = "SVO index") -> Table:
    """The models of an SVO SSA index VOTable: ``fid``, ``teff``, ``logg``, ``m_h``.

    Each table row holds the model's access reference (``...fid=<n>...``) and
    its parameters as ``teff:<v>, logg:<v>, meta:<v>`` (the SVO title field);
    rows without both are skipped.

    Raises
    ------
    ModelGridError
        If no model row is found (``source`` names where the text came from).
    """
    out = {"fid": [], "teff": [], "logg": [], "m_h": []}
    for row in _TR_RE.findall(text):
        fid = _FID_RE.search(row)
        kv = {k.lower(): float(v) for k, v in _KV_RE.findall(row)}
        if fid is None or "teff" not in kv:
            continue
        out["fid"].append(int(fid.group(1)))
        out["teff"].append(kv["teff"])
        out["logg"].append(kv.get("logg", np.nan))
        out["m_h"].append(kv.get("meta", 0.0))
    if not out["fid"]:
        raise ModelGridError(f"{source}: no model rows (fid and teff) found")
    tab = Table(out)
    tab["teff"].unit = "K"
    tab["logg"].unit = "dex"
    tab["m_h"].unit = "dex"
    tab = Table(np.unique(tab.as_array()))  # one row per fid, sorted
    return tab


def _svo_root(url: str | None) -> str:
    import os

    return (url or os.environ.get("MDSLAM_SVO_URL") or SVO_DEFAULT_URL).rstrip("/")


def svo_index(model: str = SVO_MODEL, *, url: str | None = None, timeout: float | None = None,
              retries: int | None = None) -> Table:
    """The SVO index of ``model`` (cached: ``<cache>/archive/svo/<model>/index.xml``).

    Returns
    -------
    astropy.table.Table
        ``fid``, ``teff`` [K], ``logg`` [dex], ``m_h`` [dex], one row per model.
    """
    from .archive._core import CacheEntry, download, settings

    remote = f"{_svo_root(url)}/ssap.php?model={model}"
    entry = CacheEntry(f"svo/{model}/index.xml", "svo", remote)
    path = download(remote, entry, net=settings(timeout, retries), progress=False,
                    what=f"SVO index of {model}")
    return parse_svo_index(Path(path).read_text(errors="replace"), source=str(path))


def btsettl_grid(teff: tuple[float, float] = (2600.0, 4600.0), logg: tuple[float, float] = (4.5, 5.5),
                 m_h: tuple[float, float] = (-1.0, 0.0), *, model: str = SVO_MODEL,
                 wave_range: tuple[float, float] = (5900.0, 9100.0), url: str | None = None,
                 timeout: float | None = None, retries: int | None = None,
                 progress: bool = True) -> ModelGrid:
    """The BT-Settl grid nodes inside label ranges, downloaded from SVO (archive mode).

    Every spectrum is cached (``<cache>/archive/svo/<model>/<fid>.txt``) beside
    a JSON record of its URL; offline (``MDSLAM_ARCHIVE_OFFLINE=1``) only the
    cache and the mirror are read. A file that cannot be read is skipped and
    counted in ``meta["n_skipped"]`` with its reason (the rest carry on).

    Parameters
    ----------
    teff, logg, m_h : (float, float)
        Closed label ranges (K, dex, dex); Li et al. (2021) train on 2200-7000 K,
        log g 2.5-5.5, [M/H] -1 to 0 and draw in 2800-4500 K, 4.5-5.5, -1-0.
    model : str
        SVO model key (default ``"bt-settl-cifist"``).
    wave_range : (float, float)
        Wavelengths kept, Angstrom (the survey grid plus a margin).

    Returns
    -------
    ModelGrid
        ``resolution = inf`` (the model's own sampling), labels ``teff``,
        ``logg``, ``m_h``; wavelengths as served (vacuum assumed, see the
        chapter caveats), resampled onto the first model's sampling inside
        ``wave_range``.
    """
    from tqdm.auto import tqdm

    from .archive._core import CacheEntry, download, settings

    index = svo_index(model, url=url, timeout=timeout, retries=retries)
    sel = np.ones(len(index), bool)
    for col, (lo, hi) in (("teff", teff), ("logg", logg), ("m_h", m_h)):
        v = np.asarray(index[col], float)
        sel &= (v >= lo - 1e-6) & (v <= hi + 1e-6)
    rows = index[sel]
    if len(rows) == 0:
        raise ModelGridError(f"SVO {model}: no model inside teff={teff}, logg={logg}, m_h={m_h}")
    net = settings(timeout, retries)
    root = _svo_root(url)
    wave0 = None
    fluxes, keep, reasons = [], [], []
    for k, row in enumerate(tqdm(rows, desc=f"SVO {model}", unit="model", disable=not progress)):
        fid = int(row["fid"])
        remote = f"{root}/ssap.php?model={model}&fid={fid}&format=ascii"
        entry = CacheEntry(f"svo/{model}/{fid}.txt", "svo", remote)
        path = download(remote, entry, net=net, progress=False, what=f"SVO {model} fid={fid}")
        try:
            w, f, _ = read_svo_spectrum(path)
        except ModelGridError as exc:
            reasons.append(str(exc))
            continue
        inside = (w >= wave_range[0]) & (w <= wave_range[1])
        if inside.sum() < 10:
            reasons.append(f"{path}: fewer than 10 points in {wave_range} A")
            continue
        if wave0 is None:
            wave0 = w[inside]
        fluxes.append(np.interp(wave0, w, f))
        keep.append(k)
    if not fluxes:
        raise ModelGridError(f"SVO {model}: no readable spectrum; first problem: {reasons[0]}")
    labels = rows[keep]["teff", "logg", "m_h"]
    labels.meta["n_skipped"] = len(reasons)
    labels.meta["skipped"] = reasons
    prov = (f"BT-Settl ({model}) from the SVO Theoretical Spectra server: {len(keep)} models, "
            f"Teff {teff[0]:.0f}-{teff[1]:.0f} K, log g {logg[0]:g}-{logg[1]:g}, "
            f"[M/H] {m_h[0]:+g} to {m_h[1]:+g}")
    return ModelGrid(wave0, np.vstack(fluxes), labels, ["teff", "logg", "m_h"], np.inf, "btsettl", prov,
                     label_units=["K", "dex", "dex"])


# --------------------------------------------------------------------------- #
# the offline grid: mock templates at sparse nodes
# --------------------------------------------------------------------------- #
def mock_grid(survey: str = "lamost", teff_nodes: ArrayLike | None = None,
              m_h_nodes: ArrayLike | None = None) -> ModelGrid:
    """The semi-empirical template grid of :mod:`mdslam.mock` at sparse (Teff, [M/H]) nodes.

    Noiseless :meth:`mdslam.mock.MockSurvey.model` spectra at the templates'
    resolving power (R = 2000) on the survey's native pixels, rest frame, no
    H-alpha emission, no flux-calibration error.

    Parameters
    ----------
    survey : {"lamost", "boss"}
        Pixel lattice.
    teff_nodes : array_like, optional
        Teff nodes, K (default: every 100 K from 2600 to 3800 K, the mock's
        domain being 2385-3833 K).
    m_h_nodes : array_like, optional
        [M/H] nodes, dex (default -1.5 to +0.5 in 0.5 dex: the mock's metallicity
        classes and one extrapolated node above solar).

    Returns
    -------
    ModelGrid
        Labels ``teff`` [K] and ``m_h`` [dex]; ``resolution = 2000``.
    """
    from . import mock

    t = np.arange(2600.0, 3801.0, 100.0) if teff_nodes is None else np.asarray(teff_nodes, float)
    m = np.arange(-1.5, 0.51, 0.5) if m_h_nodes is None else np.asarray(m_h_nodes, float)
    tt, mm = (a.ravel() for a in np.meshgrid(t, m, indexing="ij"))
    ms = mock.MockSurvey(survey, seed=0, resolution=mock.TEMPLATE_RESOLUTION)
    flux = ms.model(tt, mm)
    labels = Table({"teff": tt, "m_h": mm})
    labels["teff"].unit = "K"
    labels["m_h"].unit = "dex"
    prov = ("MOCK template grid (semi-empirical: Bochanski 2007 and Kesseli 2019 SDSS templates, "
            "not model atmospheres): "
            f"{t.size} Teff x {m.size} [M/H] nodes, Teff {t.min():.0f}-{t.max():.0f} K, "
            f"[M/H] {m.min():+g} to {m.max():+g}; R = {mock.TEMPLATE_RESOLUTION:.0f}")
    return ModelGrid(ms.wavelength, flux, labels, ["teff", "m_h"], mock.TEMPLATE_RESOLUTION, "mock", prov,
                     label_units=["K", "dex"])


# --------------------------------------------------------------------------- #
# resolution, rebinning, normalisation
# --------------------------------------------------------------------------- #
def lsf_sigma_kms(r_out: float, r_in: float = np.inf) -> float:
    """Gaussian sigma (km/s) that takes resolving power ``r_in`` to ``r_out`` (FWHMs add in quadrature).

    ``sigma = c / (2 sqrt(2 ln 2)) * sqrt(1 / r_out^2 - 1 / r_in^2)``; 0 when
    ``r_out >= r_in``.
    """
    if r_out <= 0:
        raise ValueError(f"resolution must be positive, got {r_out}")
    d = 1.0 / r_out**2 - (0.0 if not np.isfinite(r_in) else 1.0 / r_in**2)
    return float(C_KMS * FWHM_TO_SIGMA * np.sqrt(d)) if d > 0 else 0.0


def _is_log_uniform(wave: np.ndarray, rtol: float = 1e-3) -> bool:
    d = np.diff(np.log(wave))
    return bool(d.size and np.all(np.abs(d - d.mean()) <= rtol * d.mean()))


def convolve_to_resolution(wave: np.ndarray, flux: np.ndarray, r_out: float, r_in: float = np.inf,
                           *, oversample: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Degrade spectra to resolving power ``r_out`` with a Gaussian line-spread function.

    On a log-uniform grid the kernel is applied in pixels. Otherwise the spectra
    are first rebinned flux-conservingly (:func:`mdslam.preprocess.rebin`) onto
    a log-uniform grid with ``oversample`` pixels per kernel sigma (each such
    pixel is a top hat whose variance, ``dv^2 / 12``, is taken off the
    kernel's).

    Parameters
    ----------
    wave : ndarray, shape (n_pix,)
        Wavelength, Angstrom, increasing.
    flux : ndarray, shape (n_spec, n_pix) or (n_pix,)
    r_out, r_in : float
        Target and present resolving power (lambda / FWHM); ``r_in = inf`` for
        an unbroadened model.

    Returns
    -------
    (wave, flux)
        The (possibly new) wavelength grid (n_out,) and the convolved flux
        (n_spec, n_out) or (n_out,).
    """
    wave = np.asarray(wave, float)
    f = np.atleast_2d(np.asarray(flux, float))
    sigma = lsf_sigma_kms(r_out, r_in)
    if sigma == 0.0:
        return wave, (f[0] if np.ndim(flux) == 1 else f)
    if _is_log_uniform(wave):
        dv = C_KMS * np.mean(np.diff(np.log(wave)))
        out_w, out_f = wave, gaussian_filter1d(f, sigma / dv, axis=1, mode="nearest")
    else:
        dv = sigma / oversample
        n = int(np.floor(np.log(wave[-1] / wave[0]) * C_KMS / dv)) + 1
        out_w = wave[0] * np.exp(np.arange(n) * dv / C_KMS)
        out_w = out_w[(out_w > wave[0]) & (out_w < wave[-1])]
        rf, _, _ = _pre.rebin((wave, f, np.ones_like(f)), out_w)
        s_k = np.sqrt(max(sigma**2 - dv**2 / 12.0, 0.0))
        out_f = gaussian_filter1d(np.atleast_2d(rf), s_k / dv, axis=1, mode="nearest")
    return out_w, (out_f[0] if np.ndim(flux) == 1 else out_f)


def to_survey(grid: ModelGrid, survey: str = "lamost", wavelength: np.ndarray | None = None, *,
              resolution: float | None = None, weight_snr: float = 100.0,
              preprocess_kwargs: dict | None = None) -> ModelGrid:
    """A model grid as the survey sees it: convolved, rebinned and normalised like observed spectra.

    1. Gaussian LSF from ``grid.resolution`` to the survey's resolving power
       (:data:`mdslam.mock.SURVEYS`: LAMOST 1800, BOSS 2000), :func:`convolve_to_resolution`;
    2. :func:`mdslam.preprocess.preprocess` onto ``wavelength`` with its
       defaults (rest frame, flux-conserving rebinning, H-alpha mask, spline
       pseudo-continuum), the same call the observed spectra get. The
       continuum fit weights pixels by an inverse variance; a noiseless model
       gets the photon-noise ivar of SNR ``weight_snr`` in 6800-8300 A
       (``sigma = sqrt(F F_i) / SNR``, as the mock's noise model), so its
       weights follow the flux as an observed spectrum's do.

    Parameters
    ----------
    grid : ModelGrid
    survey : {"lamost", "boss"}
    wavelength : ndarray, shape (n_pix,), optional
        Output grid, Angstrom (default :data:`SURVEY_WAVELENGTH`, the
        1596-pixel 6147-8888 A grid of the LAMOST track).
    resolution : float, optional
        Override the survey's resolving power.
    weight_snr : float
        SNR of the weighting ivar (the output ivar is that ivar, normalised).
    preprocess_kwargs : dict, optional
        Passed on to :func:`mdslam.preprocess.preprocess`.

    Returns
    -------
    ModelGrid
        Normalised flux and ivar on ``wavelength``; ``resolution`` the survey's.
    """
    from . import mock

    if survey not in mock.SURVEYS:
        raise ValueError(f"survey must be one of {sorted(mock.SURVEYS)}, not {survey!r}")
    r_out = float(resolution if resolution is not None else mock.SURVEYS[survey].resolution)
    if r_out > grid.resolution:
        raise ValueError(f"grid {grid.name} has R = {grid.resolution:g}; cannot sharpen it to R = {r_out:g}")
    if wavelength is None:
        g = SURVEY_WAVELENGTH
        wavelength = _pre.log_lambda_grid(g["start"], g["stop"], g["n"])
    w, f = convolve_to_resolution(grid.wavelength, grid.flux, r_out, grid.resolution)
    iband = (w >= mock.I_BAND[0]) & (w <= mock.I_BAND[1])
    fi = np.median(f[:, iband], axis=1, keepdims=True) if iband.any() else np.median(f, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ivar = np.where(f > 0, weight_snr**2 / (np.abs(f) * fi), 0.0)
    meta = Table({"id": [f"{grid.name}-{i}" for i in range(len(grid))], "snr": np.full(len(grid), weight_snr)})
    sp = Spectra(w, f, ivar, np.zeros(f.shape, bool), meta)
    kw = dict(rv=0.0, progress=False)
    kw.update(preprocess_kwargs or {})
    out = _pre.preprocess(sp, np.asarray(wavelength, float), **kw)
    bad = np.asarray(out.meta["flag"]) != 0
    if bad.any():
        raise ModelGridError(f"grid {grid.name}: {int(bad.sum())} model(s) failed preprocessing: "
                             f"{out.meta['flag_reason'][np.flatnonzero(bad)[0]]}")
    return ModelGrid(out.wavelength, out.flux, grid.labels.copy(), list(grid.label_names), r_out, grid.name,
                     f"{grid.provenance}; to {survey.upper()} R = {r_out:.0f}, normalised", out.ivar,
                     list(grid.label_units))
