"""The mock's template basis: survey grids, and the Bochanski/Kesseli templates prepared on a
survey's fine grid (the temperature sequence and the metallicity response).

See :mod:`mdslam.mock` for what the basis is and how a spectrum is made from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from astropy.table import Table
from scipy.interpolate import CubicSpline, PchipInterpolator
from scipy.ndimage import gaussian_filter1d

from ..constants import C_KMS, H_ALPHA_VACUUM
from ..preprocess import rebin
from ..relations import METALLICITY_CLASSES

MOCK_CAPTION = (
    "MOCK spectra: semi-empirical, interpolated from the Bochanski et al. (2007) M0-M9 "
    "composites and the Kesseli et al. (2019) sdM/esdM/usdM spectra; labels drawn from "
    "Birky et al. (2020); not real survey data."
)
"""One sentence for the caption of any figure or table made from the mock."""

MOCK_WAVE_RANGE: tuple[float, float] = (3950.0, 9150.0)
"""Wavelength range of the mock grids, Angstrom (vacuum): where every template exists."""

I_BAND: tuple[float, float] = (6800.0, 8300.0)
"""Band (Angstrom) in which SNR is a median per-pixel S/N and flux_level a median flux."""

TEMPLATE_RESOLUTION = 2000.0
"""Resolving power assumed for the SDSS templates (Bochanski 2007; Kesseli 2019)."""

HALPHA_VACUUM = H_ALPHA_VACUUM
"""H-alpha, vacuum wavelength in Angstrom (:data:`mdslam.constants.H_ALPHA_VACUUM`)."""

_HALPHA_WINDOW = (6554.0, 6575.0)
_HALPHA_SIDES = ((6545.0, 6554.0), (6575.0, 6584.0))
_OVERSAMPLE = 4
_PAD = 10  # coarse pixels beyond each end of the mock range (690 km/s)
_RESPONSE_SPT_RANGE = (0.0, 6.0)
_RESPONSE_SYS_FLOOR = 0.02
_RESPONSE_MASKS = (
    _HALPHA_WINDOW,  # H-alpha (activity is added explicitly)
    (6864.0, 6920.0),  # telluric O2 B band, uncorrected in the Kesseli spectra
    (7586.0, 7705.0),  # telluric O2 A band (also hides K I 7667/7701 A)
)
_BLOCK = 256  # spectra rendered at once (memory: a few x _BLOCK x 14,600 float32)
_SURVEY_BLOCK = 256  # spectra sharing one random generator in generate()
_SMOOTH_LADDER = 5  # smoothing widths response_smoothing_kms * 2**k, k < 5
_SPT_STEP = 0.02  # tabulation step of the dwarf sequence in subtypes


# --------------------------------------------------------------------------- #
# survey grids
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class SurveyGrid:
    """A survey's pixel lattice and resolving power.

    Parameters
    ----------
    name : str
        ``"lamost"`` or ``"boss"``.
    resolution : float
        Resolving power lambda / FWHM of the line-spread function.
    loglam_start : float
        log10(wavelength / Angstrom) of the first native pixel.
    n_native : int
        Number of native pixels.
    dloglam : float
        Step in log10(wavelength); 1e-4 for both (69.0 km/s).
    reference : str
        Where the grid comes from.
    """

    name: str
    resolution: float
    loglam_start: float
    n_native: int
    dloglam: float = 1e-4
    reference: str = ""

    @property
    def native_wavelength(self) -> np.ndarray:
        """The survey's full native grid, vacuum Angstrom, shape (n_native,)."""
        return 10.0 ** (self.loglam_start + self.dloglam * np.arange(self.n_native))

    def mock_indices(self, wave_range: tuple[float, float] = MOCK_WAVE_RANGE) -> np.ndarray:
        """Lattice indices (from ``loglam_start``) of the native pixels inside ``wave_range``."""
        k0 = int(np.ceil(round((np.log10(wave_range[0]) - self.loglam_start) / self.dloglam, 6)))
        k1 = int(np.floor(round((np.log10(wave_range[1]) - self.loglam_start) / self.dloglam, 6)))
        return np.arange(max(k0, 0), min(k1, self.n_native - 1) + 1)

    @property
    def wavelength(self) -> np.ndarray:
        """The mock grid: native pixels inside :data:`MOCK_WAVE_RANGE`, Angstrom, (n_pix,)."""
        return 10.0 ** (self.loglam_start + self.dloglam * self.mock_indices())

    @property
    def velocity_per_pixel(self) -> float:
        """Pixel width in km/s."""
        return C_KMS * np.log(10.0) * self.dloglam


SURVEYS: dict[str, SurveyGrid] = {
    "lamost": SurveyGrid(
        "lamost",
        1800.0,
        3.5682,
        3909,
        reference="LAMOST LRS spectra: COEFF0 = 3.5682, COEFF1 = 1e-4, up to 3909 px "
        "(3700-9100 A); R ~ 1800 (Cui et al. 2012; Luo et al. 2015)",
    ),
    "boss": SurveyGrid(
        "boss",
        2000.0,
        3.5523,
        4648,
        reference="SDSS BOSS coadds: loglam on the 1e-4 lattice from 3.5523 "
        "(3567-10400 A); R ~ 1560-2650, 2000 adopted (Smee et al. 2013)",
    ),
}
"""The two survey grids (see the module docstring's table)."""


# --------------------------------------------------------------------------- #
# template basis
# --------------------------------------------------------------------------- #
def _parse_template_name(name: str) -> tuple[str, float]:
    """'sdM30_LHS156_kesseli2019' -> ('sdM', 3.0); 'M00_SDSS_bochanski2007' -> ('dM', 0.0)."""
    m = re.match(r"^(usd|esd|sd|)M(\d)(\d)_", name)
    if m is None:
        raise ValueError(f"cannot parse a spectral type from template name {name!r}")
    cls = (m.group(1) + "M") if m.group(1) else "dM"
    return cls, int(m.group(2)) + 0.1 * int(m.group(3))


@lru_cache(maxsize=1)
def _load_templates() -> tuple[dict[str, Table], dict[str, Table]]:
    from .. import datasets

    return datasets.load("templates_bochanski2007"), datasets.load("templates_subdwarfs")


def _feh_weights(feh: np.ndarray) -> np.ndarray:
    """Weights (m, 4) of the class nodes :data:`_FEH_NODES` for interpolating in [M/H].

    A natural cubic spline through the nodes is linear in the node values, so
    ``R(feh) = sum_k w_k(feh) R_k``; above the last node (0 dex) it continues
    as a straight line with the spline's end slope.
    """
    feh = np.asarray(feh, float)
    w = _FEH_SPLINE(np.minimum(feh, 0.0))
    above = np.maximum(feh, 0.0)[:, None]
    return w + above * _FEH_SPLINE_SLOPE0[None, :]


_FEH_NODES = np.array(
    [METALLICITY_CLASSES[c] for c in ("usdM", "esdM", "sdM", "dM")], dtype=float
)  # increasing: -1.5, -1.0, -0.5, 0.0
_FEH_SPLINE = CubicSpline(_FEH_NODES, np.eye(_FEH_NODES.size), axis=0, bc_type="natural")
_FEH_SPLINE_SLOPE0 = _FEH_SPLINE(0.0, 1)
_CLASS_ORDER = ("usdM", "esdM", "sdM")  # the fitted nodes; dM is the zero response


@dataclass(frozen=True)
class _Basis:
    """Templates prepared on one survey's fine grid (see the module docstring)."""

    grid: SurveyGrid
    resolution: float
    loglam_fine: np.ndarray  # (n_fine,)
    wave_fine: np.ndarray  # (n_fine,)
    wave: np.ndarray  # (n_pix,) mock grid
    dwarf: PchipInterpolator  # s -> ln f, (n_fine,)
    dwarf_knots: np.ndarray  # (10,) subtypes
    dwarf_table: np.ndarray  # (n_s, n_fine) float32: dwarf(s) every _SPT_STEP subtypes
    resp_alpha: np.ndarray  # (4, n_fine) class response ln(f_class / f_dwarf) at x = 0 (M3)
    resp_beta: np.ndarray  # (n_fine,) d ln f / d[M/H] per subtype (x = clip(s, 0, 6) - 3)
    resp_c0: np.ndarray  # (n_fine,) Kesseli-vs-Bochanski offset (diagnostic only)
    resp_err: np.ndarray  # (4, n_fine) formal errors of resp_alpha before smoothing
    halpha_profile: np.ndarray  # (n_fine,) unit-area Gaussian at H-alpha, per Angstrom
    halpha_index: int  # fine pixel nearest H-alpha
    response_templates: tuple[str, ...]

    @property
    def n_fine(self) -> int:
        return self.loglam_fine.size

    @property
    def dloglam_fine(self) -> float:
        return self.grid.dloglam / _OVERSAMPLE

    def response(self, spt: np.ndarray, feh: np.ndarray) -> np.ndarray:
        """Metallicity response ln(f / f_dwarf), float32, shape (m, n_fine)."""
        w = _feh_weights(feh).astype(np.float32)  # (m, 4)
        x = np.clip(spt, *_RESPONSE_SPT_RANGE) - 3.0
        out = w @ self.resp_alpha
        out += (feh * x).astype(np.float32)[:, None] * self.resp_beta[None, :]
        return out

    def logflux(self, spt: np.ndarray, feh: np.ndarray) -> np.ndarray:
        """ln f on the fine grid, float32 (m, n_fine), for subtypes ``spt`` and [M/H] ``feh``.

        The dwarf sequence is read from :attr:`dwarf_table`, the PCHIP
        tabulated every 0.02 subtypes, by linear interpolation (error < 1e-4).
        """
        u = (
            np.clip(spt, self.dwarf_knots[0], self.dwarf_knots[-1]) - self.dwarf_knots[0]
        ) / _SPT_STEP
        k = np.minimum(np.floor(u).astype(np.int64), self.dwarf_table.shape[0] - 2)
        t = (u - k).astype(np.float32)[:, None]
        base = self.dwarf_table[k] * (1 - t)
        base += self.dwarf_table[k + 1] * t
        if np.any(feh != 0):
            base += self.response(spt, feh)
        return base


def _to_fine(
    wave: np.ndarray,
    flux: np.ndarray,
    wave_fine: np.ndarray,
    sigma_px: float,
    unc: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rebin a template onto the fine grid (flux-conserving) and convolve it to the survey R.

    Returns flux, variance (inf where unknown) and a mask of fine pixels the
    template does not cover. The variance is convolved like the flux
    (neighbouring fine pixels are correlated; it serves only as a weight).
    """
    ivar = (
        np.ones_like(flux)
        if unc is None
        else np.where(unc > 0, 1.0 / np.maximum(unc, 1e-30) ** 2, 0.0)
    )
    f, iv, bad = rebin((wave, flux, ivar), wave_fine)
    var = np.where(iv > 0, 1.0 / np.where(iv > 0, iv, 1.0), np.inf)
    if sigma_px > 0:
        f = gaussian_filter1d(f, sigma_px, mode="nearest")
        fin = np.isfinite(var)
        v = gaussian_filter1d(np.where(fin, var, 0.0), sigma_px, mode="nearest")
        var = np.where(fin, v / (2.0 * np.sqrt(np.pi) * sigma_px), np.inf)
    return f, var, bad


def _sides(window: tuple[float, float], width: float = 8.0) -> tuple[tuple[float, float], ...]:
    return ((window[0] - width, window[0]), (window[1], window[1] + width))


def _running_median(y: np.ndarray, size: int) -> np.ndarray:
    from scipy.ndimage import median_filter

    return median_filter(y, size=size, mode="nearest")


def _interp_over(
    wave: np.ndarray,
    y: np.ndarray,
    window: tuple[float, float],
    sides: tuple[tuple[float, float], tuple[float, float]],
) -> np.ndarray:
    """Replace ``y`` inside ``window`` by a straight line between the medians of ``sides``."""
    y = y.copy()
    (l0, l1), (r0, r1) = sides
    left = (wave >= l0) & (wave < l1)
    right = (wave > r0) & (wave <= r1)
    xl, yl = np.mean(wave[left]), np.median(y[..., left], axis=-1)
    xr, yr = np.mean(wave[right]), np.median(y[..., right], axis=-1)
    inside = (wave >= window[0]) & (wave <= window[1])
    t = (wave[inside] - xl) / (xr - xl)
    y[..., inside] = np.multiply.outer(yl, 1 - t) + np.multiply.outer(yr, t)
    return y


def _fine_grid(grid: SurveyGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(log10 lambda, lambda) of the fine grid, the mock grid lambda, and the fine step in dex."""
    k = grid.mock_indices()
    k_ext = np.arange(k[0] - _PAD, k[-1] + _PAD + 1)
    sub = (np.arange(_OVERSAMPLE) + 0.5) / _OVERSAMPLE - 0.5
    loglam_fine = (grid.loglam_start + grid.dloglam * (k_ext[:, None] + sub[None, :])).ravel()
    wave = 10.0 ** (grid.loglam_start + grid.dloglam * k)
    return loglam_fine, 10.0**loglam_fine, wave, grid.dloglam / _OVERSAMPLE


def _dwarf_sequence(boch: dict[str, Table], wave_fine, sigma_px, iband):
    """The temperature sequence: PCHIP in subtype of ln f of the Bochanski M0-M9 composites."""
    knots, rows = [], []
    for name, tab in boch.items():
        _, s = _parse_template_name(name)
        w = np.asarray(tab["wave"], float)
        f, _, _ = _to_fine(w, np.asarray(tab["flux"], float), wave_fine, sigma_px)
        f = f / np.median(f[iband])
        f = np.maximum(f, 1e-4)
        knots.append(s)
        rows.append(np.log(f))
    order = np.argsort(knots)
    knots_arr = np.asarray(knots)[order]
    logf = np.asarray(rows)[order]
    logf = _interp_over(wave_fine, logf, _HALPHA_WINDOW, _HALPHA_SIDES)
    return PchipInterpolator(knots_arr, logf, axis=0, extrapolate=False), knots_arr


def _response_rows(subd: dict[str, Table], dwarf, wave_fine, sigma_px, iband):
    """Per Kesseli template: its name, log ratio to the dwarf sequence, weights and design row.

    Per pixel the fit is ``r_i = c0 + alpha_k(i) + [M/H]_k(i) beta x_i`` (dwarfs: ``r_i = c0``).
    """
    names, r_rows, w_rows, design = [], [], [], []
    skipped = np.zeros(wave_fine.size, dtype=bool)
    for lo_w, hi_w in _RESPONSE_MASKS:
        skipped |= (wave_fine >= lo_w) & (wave_fine <= hi_w)
    n_par = 2 + len(_CLASS_ORDER)  # c0, alpha_k per class, beta
    for name, tab in subd.items():
        if "kesseli2019" not in name:
            continue
        cls, s = _parse_template_name(name)
        w = np.asarray(tab["wave"], float)
        good = w > 0  # kastredux marks bad pixels by negative wavelengths
        w, fl, un = (
            w[good],
            np.asarray(tab["flux"], float)[good],
            np.asarray(tab["unc"], float)[good],
        )
        f, v, uncovered = _to_fine(w, fl, wave_fine, sigma_px, unc=un)
        covered = ~uncovered
        med = np.median(f[iband])
        f, v = f / med, v / med**2
        ok = covered & (f > 1e-3) & np.isfinite(f) & ~skipped
        rel_var = np.where(ok, v / np.maximum(f, 1e-3) ** 2, np.inf)
        weight = np.where(ok, 1.0 / (rel_var + _RESPONSE_SYS_FLOOR**2), 0.0)
        r = np.where(ok, np.log(np.maximum(f, 1e-3)) - dwarf(s), 0.0)
        row = np.zeros(n_par)
        row[0] = 1.0
        if cls != "dM":
            row[1 + _CLASS_ORDER.index(cls)] = 1.0
            row[-1] = METALLICITY_CLASSES[cls] * (np.clip(s, *_RESPONSE_SPT_RANGE) - 3.0)
        names.append(name)
        r_rows.append(r)
        w_rows.append(weight)
        design.append(row)
    return names, np.asarray(r_rows), np.asarray(w_rows), np.asarray(design)


def _fit_response(R: np.ndarray, W: np.ndarray, X: np.ndarray, n_fine: int):
    """Weighted least squares per pixel: (c0, response (5, n_fine) = alpha nodes + beta, errors)."""
    n_par = X.shape[1]
    A = np.einsum("tp,ti,tj->pij", W, X, X) + 1e-9 * np.eye(n_par)
    bvec = np.einsum("tp,ti,tp->pi", W, X, R)
    coef = np.linalg.solve(A, bvec[..., None])[..., 0]  # (n_fine, n_par)
    err = np.sqrt(np.diagonal(np.linalg.inv(A), axis1=1, axis2=2))
    alpha = np.zeros((_FEH_NODES.size, n_fine))
    resp_err = np.zeros_like(alpha)
    for j, cls in enumerate(_CLASS_ORDER):
        node = int(np.flatnonzero(_FEH_NODES == METALLICITY_CLASSES[cls])[0])
        alpha[node] = coef[:, 1 + j]
        resp_err[node] = err[:, 1 + j]
    return coef[:, 0], np.vstack([alpha, coef[:, -1][None, :]]), resp_err


def _smooth_response(resp, resp_err, wave_fine, v_fine: float, smoothing_kms: float):
    """Smooth the response more where the templates are faint (the blue end), so the template
    noise left in it is about as large as in 6000-8500 A."""
    e = np.median(resp_err[[n for n in range(4) if _FEH_NODES[n] != 0.0]], axis=0)
    e = _running_median(np.where(np.isfinite(e), e, np.nanmax(e[np.isfinite(e)])), 101)
    ref = np.median(e[(wave_fine > 6000) & (wave_fine < 8500)])
    ladder = np.arange(_SMOOTH_LADDER)
    level = np.clip(2.0 * np.log2(np.maximum(e / ref, 1.0)), 0, ladder[-1])
    s_px = smoothing_kms / v_fine
    stack = np.stack(
        [gaussian_filter1d(resp, s_px * 2.0**k, axis=1, mode="nearest") for k in ladder]
    )  # (levels, 5, n_fine)
    lo = np.floor(level).astype(int)
    hi = np.minimum(lo + 1, ladder[-1])
    t = level - lo
    cols = np.arange(wave_fine.size)
    return stack[lo, :, cols].T * (1 - t) + stack[hi, :, cols].T * t


@lru_cache(maxsize=4)
def _build_basis(survey: str, resolution: float, response_smoothing_kms: float) -> _Basis:
    grid = SURVEYS[survey]
    loglam_fine, wave_fine, wave, dfine = _fine_grid(grid)
    v_fine = C_KMS * np.log(10.0) * dfine
    fwhm2sig = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    sig_t = C_KMS / TEMPLATE_RESOLUTION * fwhm2sig
    sig_s = C_KMS / resolution * fwhm2sig
    sigma_px = np.sqrt(max(sig_s**2 - sig_t**2, 0.0)) / v_fine
    iband = (wave_fine >= I_BAND[0]) & (wave_fine <= I_BAND[1])
    boch, subd = _load_templates()
    dwarf, knots_arr = _dwarf_sequence(boch, wave_fine, sigma_px, iband)
    names, R, W, X = _response_rows(subd, dwarf, wave_fine, sigma_px, iband)
    c0, resp, resp_err = _fit_response(R, W, X, wave_fine.size)
    for window in _RESPONSE_MASKS:
        resp = _interp_over(wave_fine, resp, window, _sides(window))
    if response_smoothing_kms > 0:
        resp = _smooth_response(resp, resp_err, wave_fine, v_fine, response_smoothing_kms)
    sig_ha = HALPHA_VACUUM / resolution * fwhm2sig
    prof = np.exp(-0.5 * ((wave_fine - HALPHA_VACUUM) / sig_ha) ** 2) / (
        sig_ha * np.sqrt(2 * np.pi)
    )
    s_grid = np.arange(knots_arr[0], knots_arr[-1] + _SPT_STEP / 2, _SPT_STEP)
    table = np.ascontiguousarray(dwarf(np.minimum(s_grid, knots_arr[-1])), dtype=np.float32)
    alpha = np.ascontiguousarray(resp[:4], dtype=np.float32)
    beta = np.ascontiguousarray(resp[4], dtype=np.float32)
    prof = prof.astype(np.float32)
    for arr in (loglam_fine, wave_fine, wave, table, alpha, beta, c0, resp_err, prof):
        arr.setflags(write=False)
    return _Basis(grid=grid, resolution=resolution, loglam_fine=loglam_fine, wave_fine=wave_fine, wave=wave,
                  dwarf=dwarf, dwarf_knots=knots_arr, dwarf_table=table, resp_alpha=alpha, resp_beta=beta,
                  resp_c0=c0, resp_err=resp_err, halpha_profile=prof,
                  halpha_index=int(np.argmin(np.abs(wave_fine - HALPHA_VACUUM))),
                  response_templates=tuple(names))


# --------------------------------------------------------------------------- #
# label sources
# --------------------------------------------------------------------------- #
