"""H-alpha chromospheric activity: the equivalent width of the line and an active/inactive call.

Li et al. (2021), sec. 4.4, report that "~8 percent" of their LAMOST M dwarfs are active and
mask H-alpha before fitting; the paper prints no equivalent-width criterion and no windows
(its catalogue's ``type`` column is taken from Guo et al. 2015). This module measures the
line the way the SDSS M dwarf activity work does (West et al. 2011, AJ 141, 97): the
equivalent width over a 14 A line window against the mean flux of two continuum windows on
either side, with emission counted positive, and the star called active when

* the equivalent width exceeds ``ACTIVE_EW_MIN`` (0.75 A), and
* it exceeds ``ACTIVE_SIGMA`` (3) times its own uncertainty.

Wavelengths are vacuum, rest frame, in Angstrom (LAMOST and SDSS spectra are vacuum; shift
them with :func:`mdslam.preprocess.to_rest_frame` first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from .constants import H_ALPHA_VACUUM

__all__ = ["HALPHA_LINE", "HALPHA_CONTINUUM", "ACTIVE_EW_MIN", "ACTIVE_SIGMA", "HalphaEW",
           "halpha_ew", "halpha_table"]

#: Line window [A] (vacuum), West et al. 2011: +-7 A around :data:`mdslam.constants.H_ALPHA_VACUUM`.
HALPHA_LINE: tuple[float, float] = (H_ALPHA_VACUUM - 7.0, H_ALPHA_VACUUM + 7.0)
#: Continuum windows [A] (vacuum) on either side of the line, West et al. 2011.
HALPHA_CONTINUUM: tuple[tuple[float, float], tuple[float, float]] = ((6500.0, 6550.0), (6575.0, 6625.0))
#: Minimum emission equivalent width of an active star [A] (West et al. 2011).
ACTIVE_EW_MIN: float = 0.75
#: Minimum equivalent width in units of its own uncertainty for an active star.
ACTIVE_SIGMA: float = 3.0


@dataclass(frozen=True)
class HalphaEW:
    """H-alpha equivalent widths of a set of spectra.

    Attributes
    ----------
    ew : ndarray, shape (n,)
        Equivalent width [A], emission positive: ``integral (F / F_c - 1) d lambda``
        over the line window. NaN where a window has no good pixel.
    ew_err : ndarray, shape (n,)
        1-sigma uncertainty of ``ew`` [A] from the inverse variances (line and
        continuum noise); NaN without inverse variances.
    continuum : ndarray, shape (n,)
        Continuum flux at the line centre (flux units of the input).
    active : ndarray of bool, shape (n,)
        ``ew > ew_min`` and ``ew > n_sigma * ew_err`` (``ew_err`` NaN: the first test only).
    """

    ew: np.ndarray
    ew_err: np.ndarray
    continuum: np.ndarray
    active: np.ndarray


def _window_mean(wave: np.ndarray, flux: np.ndarray, var: np.ndarray, good: np.ndarray,
                 lo: float, hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean flux, its variance and mean wavelength over [lo, hi] per spectrum (good pixels)."""
    w = good & (wave >= lo) & (wave <= hi)
    n = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(w, flux, 0.0).sum(axis=-1) / n
        v = np.where(w, var, 0.0).sum(axis=-1) / n**2
        lam = np.where(w, wave, 0.0).sum(axis=-1) / n
    return mean, v, lam


def _as_rows(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Wavelength, flux, variance (0 where not good or without ivar) and good-pixel mask, all (n, n_pix).

    Raises
    ------
    ValueError
        ``ivar`` of another shape than ``flux``.
    """
    flux = np.atleast_2d(np.asarray(flux, float))
    wave = np.broadcast_to(np.atleast_2d(np.asarray(wave, float)), flux.shape)
    if ivar is None:
        return wave, flux, np.zeros_like(flux), np.isfinite(flux) & np.isfinite(wave)
    ivar = np.atleast_2d(np.asarray(ivar, float))
    if ivar.shape != flux.shape:
        raise ValueError(f"ivar has shape {ivar.shape}, flux {flux.shape}: they must agree")
    good = np.isfinite(flux) & np.isfinite(wave) & np.isfinite(ivar) & (ivar > 0)
    with np.errstate(divide="ignore"):
        var = np.where(good, 1.0 / np.where(good, ivar, 1.0), 0.0)
    return wave, flux, var, good


def _check_windows(wave: np.ndarray, line: tuple[float, float],
                   continuum: tuple[tuple[float, float], tuple[float, float]]) -> None:
    """Raise ValueError naming the first H-alpha window (A) outside every wavelength grid."""
    lo_all, hi_all = np.nanmin(wave), np.nanmax(wave)
    for name, (lo, hi) in (("line", line), ("blue continuum", continuum[0]), ("red continuum", continuum[1])):
        if hi < lo_all or lo > hi_all:
            raise ValueError(f"H-alpha {name} window {lo:g}-{hi:g} A lies outside the wavelength grid "
                             f"({lo_all:g}-{hi_all:g} A)")


def halpha_ew(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray | None = None, *,
              line: tuple[float, float] = HALPHA_LINE,
              continuum: tuple[tuple[float, float], tuple[float, float]] = HALPHA_CONTINUUM,
              ew_min: float = ACTIVE_EW_MIN, n_sigma: float = ACTIVE_SIGMA) -> HalphaEW:
    """H-alpha equivalent width (emission positive) and the active call of each spectrum.

    The continuum is the straight line through the mean flux of the two continuum
    windows (placed at their mean wavelengths); the equivalent width is the sum of
    ``(F / F_c - 1) * d_lambda`` over the good pixels of the line window, with
    ``d_lambda`` the pixel widths (midpoints between neighbouring pixels).

    Parameters
    ----------
    wave : array_like, shape (n_pix,) or (n, n_pix)
        Rest-frame vacuum wavelength [A], increasing.
    flux : array_like, shape (n_pix,) or (n, n_pix)
        Flux (any unit; not continuum-normalised is fine).
    ivar : array_like, same shape as ``flux``, optional
        Inverse variance of ``flux``; pixels with ``ivar <= 0`` or non-finite
        values are skipped. Without it every finite pixel is used and no
        uncertainty is given.
    line : (float, float)
        Line window [A].
    continuum : ((float, float), (float, float))
        Blue and red continuum windows [A].
    ew_min : float
        Minimum equivalent width of an active star [A].
    n_sigma : float
        Minimum ``ew / ew_err`` of an active star.

    Returns
    -------
    HalphaEW
        Arrays of shape (n,) (n = 1 for a single spectrum).

    Raises
    ------
    ValueError
        If the shapes disagree or a window lies outside every wavelength grid.
    """
    wave, flux, var, good = _as_rows(wave, flux, ivar)
    have_err = ivar is not None
    _check_windows(wave, line, continuum)
    fb, vb, lb = _window_mean(wave, flux, var, good, *continuum[0])
    fr, vr, lr = _window_mean(wave, flux, var, good, *continuum[1])
    # pixel widths: midpoints between neighbours, edge pixels mirrored
    edges = np.concatenate([wave[:, :1] - (wave[:, 1:2] - wave[:, :1]) / 2, (wave[:, 1:] + wave[:, :-1]) / 2,
                            wave[:, -1:] + (wave[:, -1:] - wave[:, -2:-1]) / 2], axis=1)
    dlam = np.diff(edges, axis=1)
    in_line = good & (wave >= line[0]) & (wave <= line[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (fr - fb) / (lr - lb)
        fc = fb[:, None] + slope[:, None] * (wave - lb[:, None])          # continuum per pixel
        ew = np.where(in_line, (flux / fc - 1.0) * dlam, 0.0).sum(axis=1)
        ew = np.where(in_line.any(axis=1) & np.isfinite(fb) & np.isfinite(fr), ew, np.nan)
        # uncertainty: line-pixel noise plus the continuum level's noise (first order)
        s = np.where(in_line, flux * dlam, 0.0).sum(axis=1)              # integral of F
        var_line = np.where(in_line, var * (dlam / fc) ** 2, 0.0).sum(axis=1)
        centre = 0.5 * (line[0] + line[1])
        fc0 = fb + slope * (centre - lb)
        wr = (centre - lb) / (lr - lb)                                   # weight of the red window
        var_fc = (1 - wr) ** 2 * vb + wr**2 * vr
        ew_err = np.sqrt(var_line + (s / fc0**2) ** 2 * var_fc) if have_err else np.full_like(ew, np.nan)
    ew_err = np.where(np.isfinite(ew), ew_err, np.nan)
    active = np.isfinite(ew) & (ew > ew_min)
    if have_err:
        active &= ew > n_sigma * ew_err
    return HalphaEW(ew=ew, ew_err=ew_err, continuum=fc0, active=active)


def halpha_table(wave: np.ndarray, flux: np.ndarray, ivar: np.ndarray | None = None,
                 ids: np.ndarray | None = None, **kwargs) -> Table:
    """:func:`halpha_ew` as a Table: ``id``, ``ew_halpha`` and ``ew_halpha_err`` [A], ``active``.

    Parameters
    ----------
    wave, flux, ivar, **kwargs
        As for :func:`halpha_ew`.
    ids : array_like, shape (n,), optional
        Identifiers of the spectra (default 0..n-1).

    Returns
    -------
    Table
        One row per spectrum; the criterion in ``meta``.
    """
    r = halpha_ew(wave, flux, ivar, **kwargs)
    t = Table()
    t["id"] = np.arange(len(r.ew)) if ids is None else np.asarray(ids)
    t["ew_halpha"] = r.ew
    t["ew_halpha"].unit = "Angstrom"
    t["ew_halpha"].description = "H-alpha equivalent width, emission positive"
    t["ew_halpha_err"] = r.ew_err
    t["ew_halpha_err"].unit = "Angstrom"
    t["active"] = r.active
    t["active"].description = (f"EW > {kwargs.get('ew_min', ACTIVE_EW_MIN):g} A and EW > "
                               f"{kwargs.get('n_sigma', ACTIVE_SIGMA):g} sigma (West et al. 2011)")
    t.meta["EW_MIN"] = kwargs.get("ew_min", ACTIVE_EW_MIN)
    t.meta["NSIGMA"] = kwargs.get("n_sigma", ACTIVE_SIGMA)
    return t
