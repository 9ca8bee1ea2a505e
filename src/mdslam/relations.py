"""The papers' formulas as pure functions: uncertainty laws, calibrations, Mann relations, extinction.

Every function takes numpy arrays (or scalars) and returns numpy arrays of the
broadcast shape; none reads or keeps state. Equation numbers refer to Qiu et al.
2025 (BOSS M dwarfs, "Q25") unless stated; Li et al. 2021 (LAMOST M dwarfs) is
"L21".

Slips in the printed equations, and what is implemented instead:

- Q25 eq. 12 prints ``dX^2 + eX^2``; Mann et al. 2015 (erratum 2016, Table 2,
  BP-RP with J-H) is ``a + bX + cX^2 + dX^3 + eX^4 + f(J-H) + g(J-H)^2``.
- Q25 eq. 13 prints ``+ (0.0168)2``; Mann et al. 2015 is
  ``R = 1.9515 - 0.3520 M_Ks + 0.01680 M_Ks^2``.
- Q25 sec. 4.2 says eqs. 6-8 give 0.19 dex / 132 K / 0.1 dex "at SNR = 15";
  those numbers are the values at SNR = 10 (as the conclusions say):
  0.34 * 10**-0.25 = 0.191, 388.88 * 10**-0.47 = 131.8, 0.13 * 10**-0.13 = 0.096.
- Q25 eq. 11 (Niu et al. 2023) does not say whether the broken power law is
  added to or subtracted from the LAMOST [Fe/H]; see :func:`niu2023_corrected_feh`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from astropy.table import Table
from numpy.typing import ArrayLike

from .preprocess import pixel_edges

__all__ = [
    "SNR_UNCERTAINTY_COEFFS",
    "ASPCAP_CORRECTION_COEFFS",
    "NIU2023_TEFF_BREAK",
    "NIU2023_VALID_TEFF",
    "MANN2015_TEFF_COEFFS",
    "MANN2015_RADIUS_COEFFS",
    "MANN2015_RADIUS_MKS_RANGE",
    "MANN2019_MASS_COEFFS",
    "MANN2019_MASS_ZP",
    "BABUSIAUX2018_COEFFS",
    "WANG_CHEN2019_RATIOS",
    "power_law",
    "floor_law",
    "snr_uncertainty",
    "logg_from_mass_radius",
    "aspcap_feh_correction",
    "calibrate_aspcap_feh",
    "aspcap_design_matrix",
    "fit_aspcap_correction",
    "niu2023_correction",
    "niu2023_corrected_feh",
    "mann2015_teff",
    "mann2015_radius",
    "mann2019_mass",
    "absolute_magnitude",
    "av_from_ebv",
    "gaia_extinction_coefficients",
    "gaia_extinction",
    "DWARF_SEQUENCE",
    "DWARF_TEFF_RANGE",
    "METALLICITY_CLASSES",
    "ZETA_RELATIONS",
    "spt_to_teff",
    "teff_to_spt",
    "logg_from_teff",
    "active_fraction_west2011",
    "air_to_vacuum",
    "spectral_indices",
]

# --------------------------------------------------------------------------- #
# Q25 eqs. 6-8: uncertainty as a power law of the spectral SNR
# --------------------------------------------------------------------------- #
#: ``label -> (a, b)`` of ``sigma = a * SNR**b`` (Q25 eqs. 6, 7, 8); sigma in dex,
#: K and dex. Calibrated on BOSS spectra with SNR ~ 2.3-19.3 (extrapolated outside).
SNR_UNCERTAINTY_COEFFS: dict[str, tuple[float, float]] = {
    "feh": (0.34, -0.25),
    "teff": (388.88, -0.47),
    "logg": (0.13, -0.13),
}

_LABEL_ALIASES = {
    "feh": "feh", "fe_h": "feh", "[fe/h]": "feh", "fe/h": "feh", "m_h": "feh", "[m/h]": "feh",
    "teff": "teff", "t_eff": "teff",
    "logg": "logg", "log_g": "logg", "log g": "logg",
}


def power_law(snr: ArrayLike, a: float, b: float) -> np.ndarray:
    """Power law ``a * snr**b`` (the form of Q25 eqs. 6-8).

    Parameters
    ----------
    snr : array_like
        Signal-to-noise ratio per pixel (dimensionless), any shape.
    a, b : float
        Amplitude (unit of the label) and exponent.

    Returns
    -------
    ndarray
        ``a * snr**b``, same shape as ``snr``.
    """
    return a * np.asarray(snr, dtype=float) ** b


def floor_law(snr: ArrayLike, a: float, floor: float) -> np.ndarray:
    """Uncertainty law with a noise term and a floor: ``sqrt(floor**2 + (a / snr)**2)``.

    The photon-noise part of a label's error falls as 1/SNR; what the spectra
    and the model cannot resolve (the floor) does not. With ``a, floor >= 0``
    the law is non-increasing in SNR, unlike ``a * SNR**b`` with ``b`` free
    (:func:`power_law`), and tends to ``floor`` at high SNR. Fitted to CV
    scatter by :func:`mdslam.validation.fit_floor_law`.

    Parameters
    ----------
    snr : array_like
        Spectral SNR (> 0), any shape.
    a : float
        Noise coefficient, label unit times SNR (K or dex at SNR = 1), >= 0.
    floor : float
        High-SNR floor, label unit (K or dex), >= 0.

    Returns
    -------
    ndarray
        Uncertainty in the label's unit, same shape as ``snr``.
    """
    snr = np.asarray(snr, dtype=float)
    return np.sqrt(float(floor) ** 2 + (float(a) / snr) ** 2)


def snr_uncertainty(snr: ArrayLike, label: str) -> np.ndarray:
    """Published SLAM uncertainty at a given BOSS SNR (Q25 eqs. 6-8).

    ``sigma_[Fe/H] = 0.34 SNR^-0.25`` (dex, eq. 6),
    ``sigma_Teff = 388.88 SNR^-0.47`` (K, eq. 7),
    ``sigma_logg = 0.13 SNR^-0.13`` (dex, eq. 8).

    Parameters
    ----------
    snr : array_like
        BOSS pipeline SNR, any shape. The laws were fitted over SNR ~ 2.3-19.3.
    label : str
        ``"feh"`` (also ``"fe_h"``, ``"[Fe/H]"``), ``"teff"`` or ``"logg"``.

    Returns
    -------
    ndarray
        Uncertainty in dex (feh, logg) or K (teff), same shape as ``snr``.
    """
    key = _LABEL_ALIASES.get(str(label).strip().lower())
    if key is None:
        raise ValueError(f"unknown label {label!r}; use one of 'feh', 'teff', 'logg'")
    a, b = SNR_UNCERTAINTY_COEFFS[key]
    return power_law(snr, a, b)


# --------------------------------------------------------------------------- #
# Q25 eq. 9: surface gravity from mass and radius
# --------------------------------------------------------------------------- #
def logg_from_mass_radius(mass: ArrayLike, radius: ArrayLike) -> np.ndarray:
    """Surface gravity from mass and radius, Q25 eq. 9.

    ``log g = 4.438 + log10(M/Msun) - 2 log10(R/Rsun)`` (4.438 = log g of the Sun, cgs).

    Parameters
    ----------
    mass : array_like
        Stellar mass in solar masses.
    radius : array_like
        Stellar radius in solar radii.

    Returns
    -------
    ndarray
        log10(g / cm s^-2), broadcast shape of the inputs.
    """
    return 4.438 + np.log10(np.asarray(mass, float)) - 2.0 * np.log10(np.asarray(radius, float))


# --------------------------------------------------------------------------- #
# Q25 eq. 10: ASPCAP [Fe/H] calibration
# --------------------------------------------------------------------------- #
#: Coefficients of Q25 eq. 10 in the order of :func:`aspcap_design_matrix`:
#: ``x^2, y^2, x*y, x, y, 1`` with ``x = Teff/1000 K``, ``y = [Fe/H]_ASPCAP``.
ASPCAP_CORRECTION_COEFFS: np.ndarray = np.array([-0.427, -0.158, 0.431, 2.767, -2.156, -4.405])


def aspcap_design_matrix(teff: ArrayLike, feh: ArrayLike) -> np.ndarray:
    """Design matrix of the eq. 10 quadratic: columns ``x^2, y^2, xy, x, y, 1``.

    Parameters
    ----------
    teff : array_like, shape (n,)
        ASPCAP Teff in K (``x = teff / 1000``).
    feh : array_like, shape (n,)
        ASPCAP [Fe/H] in dex (``y``).

    Returns
    -------
    ndarray, shape (n, 6)
    """
    x = np.atleast_1d(np.asarray(teff, float)) / 1000.0
    y = np.atleast_1d(np.asarray(feh, float))
    x, y = np.broadcast_arrays(x, y)
    return np.stack([x**2, y**2, x * y, x, y, np.ones_like(x)], axis=-1)


def aspcap_feh_correction(teff: ArrayLike, feh: ArrayLike,
                          coeffs: Sequence[float] | None = None) -> np.ndarray:
    """Correction to add to ASPCAP [Fe/H] of M dwarfs, Q25 eq. 10.

    ``Delta[Fe/H]_cal = -0.427 x^2 - 0.158 y^2 + 0.431 xy + 2.767 x - 2.156 y - 4.405``
    with ``x = Teff_ASPCAP / 1000 K`` and ``y = [Fe/H]_ASPCAP``. The sign follows
    Q25 Fig. 10: ``[Fe/H]_corr = [Fe/H]_ASPCAP + Delta_cal`` brings ASPCAP onto the
    SLAM (FGK-companion) scale.

    Parameters
    ----------
    teff : array_like
        ASPCAP effective temperature in K.
    feh : array_like
        ASPCAP [Fe/H] in dex.
    coeffs : sequence of 6 floats, optional
        Coefficients (x^2, y^2, xy, x, y, 1); default the published ones
        (:data:`ASPCAP_CORRECTION_COEFFS`), or a refit from :func:`fit_aspcap_correction`.

    Returns
    -------
    ndarray
        Correction in dex, broadcast shape of ``teff`` and ``feh``.
    """
    c = ASPCAP_CORRECTION_COEFFS if coeffs is None else np.asarray(coeffs, float)
    x = np.asarray(teff, float) / 1000.0
    y = np.asarray(feh, float)
    return c[0] * x**2 + c[1] * y**2 + c[2] * x * y + c[3] * x + c[4] * y + c[5]


def calibrate_aspcap_feh(teff: ArrayLike, feh: ArrayLike,
                         coeffs: Sequence[float] | None = None) -> np.ndarray:
    """ASPCAP [Fe/H] put on the Q25 scale: ``feh + aspcap_feh_correction(teff, feh)`` (dex)."""
    return np.asarray(feh, float) + aspcap_feh_correction(teff, feh, coeffs)


def fit_aspcap_correction(teff: ArrayLike, feh_aspcap: ArrayLike, feh_ref: ArrayLike,
                          sigma: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Refit the eq. 10 quadratic by (weighted) linear least squares.

    Fits ``feh_ref - feh_aspcap = c . [x^2, y^2, xy, x, y, 1]``.

    Parameters
    ----------
    teff : array_like, shape (n,)
        ASPCAP Teff in K.
    feh_aspcap : array_like, shape (n,)
        ASPCAP [Fe/H] in dex.
    feh_ref : array_like, shape (n,)
        Reference [Fe/H] on the target scale (e.g. SLAM, or B20's FGK-calibrated
        Cannon [Fe/H]) in dex.
    sigma : array_like, shape (n,), optional
        Uncertainty of each difference (dex). Without it the fit is unweighted and
        the covariance is scaled by the residual variance.

    Returns
    -------
    coeffs : ndarray, shape (6,)
        In the order of :data:`ASPCAP_CORRECTION_COEFFS`.
    cov : ndarray, shape (6, 6)
        Covariance of ``coeffs``; ``sqrt(diag(cov))`` are the 1-sigma errors.
        With ``sigma`` given it is ``(A^T W A)^-1`` scaled by the reduced chi^2 when
        that exceeds 1.

    Raises
    ------
    ValueError
        With fewer than 7 finite rows (6 coefficients plus one degree of freedom).
    """
    a = aspcap_design_matrix(teff, feh_aspcap)
    d = np.asarray(feh_ref, float) - np.asarray(feh_aspcap, float)
    w = np.ones_like(d) if sigma is None else 1.0 / np.asarray(sigma, float) ** 2
    ok = np.all(np.isfinite(a), axis=1) & np.isfinite(d) & np.isfinite(w) & (w > 0)
    a, d, w = a[ok], d[ok], w[ok]
    n, p = a.shape
    if n <= p:
        raise ValueError(f"need more than {p} finite rows to fit eq. 10, got {n}")
    sw = np.sqrt(w)
    coeffs, *_ = np.linalg.lstsq(a * sw[:, None], d * sw, rcond=None)
    resid = d - a @ coeffs
    chi2_red = float(np.sum(w * resid**2) / (n - p))
    cov = np.linalg.inv(a.T @ (a * w[:, None]))
    if sigma is None:
        cov = cov * chi2_red
    elif chi2_red > 1:
        cov = cov * chi2_red
    return coeffs, cov


# --------------------------------------------------------------------------- #
# Q25 eq. 11: Niu et al. 2023 temperature correction of LAMOST [Fe/H]
# --------------------------------------------------------------------------- #
NIU2023_TEFF_BREAK = 5281.4
#: Teff range (K) over which Niu et al. 2023 calibrated the broken power law.
NIU2023_VALID_TEFF = (4000.0, 7000.0)


def niu2023_correction(teff: ArrayLike, outside: str = "nan") -> np.ndarray:
    """Temperature-dependent bias of LAMOST DR [Fe/H] (Niu et al. 2023; Q25 eq. 11).

    ``Delta = 0.358 (Teff/5281.4)^-2.404 - 0.4`` for ``Teff >= 5281.4 K`` and
    ``Delta = 0.358 (Teff/5281.4)^1.254 - 0.4`` below. ``Delta`` is negative
    everywhere: -0.042 dex at the 5281.4 K peak, about -0.15 dex at 4000 K and
    -0.22 dex at 7000 K. It is the bias of the measured value (see
    :func:`niu2023_corrected_feh` for the sign convention adopted).

    Parameters
    ----------
    teff : array_like
        LAMOST Teff of the FGK star in K.
    outside : {"nan", "extrapolate"}
        What to return outside the calibrated 4000 < Teff < 7000 K: NaN (default)
        or the extrapolated power law.

    Returns
    -------
    ndarray
        Delta in dex, same shape as ``teff``.
    """
    if outside not in ("nan", "extrapolate"):
        raise ValueError(f"outside must be 'nan' or 'extrapolate', got {outside!r}")
    t = np.asarray(teff, float)
    r = t / NIU2023_TEFF_BREAK
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = np.where(t >= NIU2023_TEFF_BREAK, 0.358 * r**-2.404, 0.358 * r**1.254) - 0.4
    if outside == "nan":
        lo, hi = NIU2023_VALID_TEFF
        delta = np.where((t > lo) & (t < hi), delta, np.nan)
    return delta


def niu2023_corrected_feh(feh: ArrayLike, teff: ArrayLike, outside: str = "nan") -> np.ndarray:
    """LAMOST FGK [Fe/H] corrected for the Niu et al. 2023 temperature trend (Q25 eq. 11).

    Convention adopted: ``[Fe/H]_niu = [Fe/H]_LAMOST - Delta(Teff)``, i.e. ``Delta``
    is read as the bias of the measured [Fe/H] and is removed. Q25's appendix
    does not print the sign; the reasons for this reading are

    * Niu et al. found that LAMOST under-estimates [Fe/H] of dwarfs away from
      ~5300 K; ``Delta`` is most negative for the coolest and hottest stars, so
      subtracting it raises their [Fe/H] (by 0.15 dex at 4000 K);
    * in Q25 Fig. 12 the primary-minus-secondary difference becomes flat in Teff
      once each star's own ``Delta`` is removed, which holds for ``feh - Delta``
      (a cooler secondary measured too low is raised more than its primary);
    * Q25 sec. 5 and Qiu et al. 2024 find FGK-calibrated M dwarf [Fe/H] higher
      than ASPCAP's by 0.1-0.24 dex, consistent with an upward correction.

    Parameters
    ----------
    feh : array_like
        LAMOST [Fe/H] in dex.
    teff : array_like
        LAMOST Teff in K (valid 4000-7000 K).
    outside : {"nan", "extrapolate"}
        Passed to :func:`niu2023_correction`.

    Returns
    -------
    ndarray
        Corrected [Fe/H] in dex; NaN outside the valid Teff range by default.
    """
    return np.asarray(feh, float) - niu2023_correction(teff, outside=outside)


# --------------------------------------------------------------------------- #
# Q25 eqs. 12-14: Mann et al. Teff, radius and mass relations
# --------------------------------------------------------------------------- #
#: a..g of Q25 eq. 12 (Mann et al. 2015/2016, BP-RP and J-H).
MANN2015_TEFF_COEFFS: tuple[float, ...] = (3.172, -2.475, 1.082, -0.2231, 0.01738, 0.08776, 0.04355)
#: Constant, linear, quadratic coefficients of Q25 eq. 13 (Mann et al. 2015, R from M_Ks).
MANN2015_RADIUS_COEFFS: tuple[float, float, float] = (1.9515, -0.3520, 0.01680)
#: The M_Ks range [mag] over which Mann et al. (2015) calibrate the radius relation of Q25 eq. 13.
MANN2015_RADIUS_MKS_RANGE: tuple[float, float] = (4.6, 9.8)
#: a_0..a_5 of Q25 eq. 14 (Mann et al. 2019, n=5, BIC 86 row of their Table 6).
MANN2019_MASS_COEFFS: tuple[float, ...] = (-0.642, -0.208, -8.43e-4, 7.87e-3, 1.42e-4, -2.13e-4)
MANN2019_MASS_ZP = 7.5


def mann2015_teff(bp_rp: ArrayLike, j_h: ArrayLike) -> np.ndarray:
    """Teff from Gaia BP-RP and 2MASS J-H, Q25 eq. 12 (Mann et al. 2015, 2016 erratum).

    ``Teff / 3500 K = a + bX + cX^2 + dX^3 + eX^4 + f(J-H) + g(J-H)^2`` with
    ``X = BP - RP`` and the coefficients of :data:`MANN2015_TEFF_COEFFS`
    (scatter 49 K). The paper prints ``dX^2 + eX^2``, a typo for ``dX^3 + eX^4``.

    Parameters
    ----------
    bp_rp : array_like
        Gaia BP - RP colour in mag.
    j_h : array_like
        2MASS J - H colour in mag.

    Returns
    -------
    ndarray
        Teff in K.
    """
    a, b, c, d, e, f, g = MANN2015_TEFF_COEFFS
    x = np.asarray(bp_rp, float)
    jh = np.asarray(j_h, float)
    return 3500.0 * (a + b * x + c * x**2 + d * x**3 + e * x**4 + f * jh + g * jh**2)


def mann2015_radius(mks: ArrayLike) -> np.ndarray:
    """Radius from absolute 2MASS Ks, Q25 eq. 13 (Mann et al. 2015, scatter 2.89%).

    ``R / Rsun = 1.9515 - 0.3520 M_Ks + 0.01680 M_Ks^2`` (the paper's "+ (0.0168)2"
    is a typo).

    Parameters
    ----------
    mks : array_like
        Absolute Ks magnitude in mag; Mann et al. calibrate the relation for
        4.6 < M_Ks < 9.8.

    Returns
    -------
    ndarray
        Radius in solar radii, shaped like ``mks``.
    """
    c0, c1, c2 = MANN2015_RADIUS_COEFFS
    m = np.asarray(mks, float)
    return c0 + c1 * m + c2 * m**2


def mann2019_mass(mks: ArrayLike) -> np.ndarray:
    """Mass from absolute 2MASS Ks, Q25 eq. 14 (Mann et al. 2019, n = 5).

    ``log10(M / Msun) = sum_{i=0}^{5} a_i (M_Ks - 7.5)^i`` with the coefficients of
    :data:`MANN2019_MASS_COEFFS`.

    Parameters
    ----------
    mks : array_like
        Absolute Ks magnitude in mag (calibrated range 4 < M_Ks < 11).

    Returns
    -------
    ndarray
        Mass in solar masses.
    """
    dm = np.asarray(mks, float) - MANN2019_MASS_ZP
    logm = sum(a * dm**i for i, a in enumerate(MANN2019_MASS_COEFFS))
    return 10.0 ** np.asarray(logm, float)


# --------------------------------------------------------------------------- #
# Photometry: absolute magnitudes and extinction (Q25 sec. 2.2, L21 sec. 4.3)
# --------------------------------------------------------------------------- #
def absolute_magnitude(m: ArrayLike, parallax_mas: ArrayLike,
                       extinction: ArrayLike = 0.0) -> np.ndarray:
    """Absolute magnitude from apparent magnitude and parallax (Q25 sec. 2.2).

    ``M = m + 5 log10(parallax / mas) - 10 - A``.

    Parameters
    ----------
    m : array_like
        Apparent magnitude (mag).
    parallax_mas : array_like
        Parallax in milliarcseconds; non-positive parallaxes give NaN.
    extinction : array_like, optional
        Extinction in the same band (mag), default 0.

    Returns
    -------
    ndarray
        Absolute magnitude in mag.
    """
    plx = np.asarray(parallax_mas, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        logp = np.where(plx > 0, np.log10(np.where(plx > 0, plx, 1.0)), np.nan)
    return np.asarray(m, float) + 5.0 * logp - 10.0 - np.asarray(extinction, float)


def av_from_ebv(ebv: ArrayLike, r_v: float = 3.1) -> np.ndarray:
    """Visual extinction ``A_V = R_V E(B-V)`` with R_V = 3.1 (Cardelli et al. 1989; Q25 sec. 2.2).

    Parameters
    ----------
    ebv : array_like
        Reddening E(B-V) in mag (e.g. from the Bayestar19 3-D map).
    r_v : float
        Total-to-selective extinction ratio.

    Returns
    -------
    ndarray
        A_V in mag.
    """
    return r_v * np.asarray(ebv, float)


#: Gaia Collaboration, Babusiaux et al. 2018 (A&A 616, A10), eq. 1 and Table 1:
#: ``k_X = A_X/A_0 = c1 + c2 C + c3 C^2 + c4 C^3 + c5 A0 + c6 A0^2 + c7 C A0`` with
#: ``C = (BP-RP)_0``; rows are the coefficients c1..c7 for G, BP and RP.
BABUSIAUX2018_COEFFS: dict[str, tuple[float, ...]] = {
    "G": (0.9761, -0.1704, 0.0086, 0.0011, -0.0438, 0.0013, 0.0099),
    "BP": (1.1517, -0.0871, -0.0333, 0.0173, -0.0230, 0.0006, 0.0043),
    "RP": (0.6104, -0.0170, -0.0026, -0.0017, -0.0078, 0.00005, 0.0006),
}

#: Constant ratios A_X/A_V of Wang & Chen 2019 (ApJ 877, 116), Table 3, the
#: extinction law L21 uses for A_G (sec. 4.3).
WANG_CHEN2019_RATIOS: dict[str, float] = {"G": 0.789, "BP": 1.002, "RP": 0.589}


def gaia_extinction_coefficients(bp_rp0: ArrayLike, a0: ArrayLike) -> dict[str, np.ndarray]:
    """Colour- and extinction-dependent ``k_X = A_X / A_0`` of Babusiaux et al. 2018, eq. 1.

    Gaia Collaboration 2018 fitted the polynomial to synthetic photometry of
    spectra with 3500 K < Teff < 10000 K, so for mid and late M dwarfs it is an
    extrapolation. For the few hundred pc distances of the papers' M dwarfs A_0
    is small and the choice hardly matters.

    Parameters
    ----------
    bp_rp0 : array_like
        Intrinsic colour (BP-RP)_0 in mag.
    a0 : array_like
        Extinction at 550 nm (taken as A_V) in mag.

    Returns
    -------
    dict
        ``{"G": k_G, "BP": k_BP, "RP": k_RP}``, arrays of the broadcast shape.
    """
    c = np.asarray(bp_rp0, float)
    a = np.asarray(a0, float)
    out = {}
    for band, (c1, c2, c3, c4, c5, c6, c7) in BABUSIAUX2018_COEFFS.items():
        out[band] = c1 + c2 * c + c3 * c**2 + c4 * c**3 + c5 * a + c6 * a**2 + c7 * c * a
    return out


def gaia_extinction(a_v: ArrayLike, bp_rp: ArrayLike | None = None, method: str = "babusiaux2018",
                    n_iter: int = 5) -> dict[str, np.ndarray]:
    """Extinction in the Gaia G, BP and RP bands from A_V (Q25 sec. 2.2).

    Parameters
    ----------
    a_v : array_like
        Visual extinction in mag (e.g. ``av_from_ebv(ebv)``).
    bp_rp : array_like, optional
        Observed (reddened) BP-RP in mag; required for ``"babusiaux2018"``.
    method : {"babusiaux2018", "wang_chen2019"}
        ``"babusiaux2018"`` (what Q25 cites): the colour-dependent eq. 1 of Gaia
        Collaboration 2018, evaluated at the intrinsic colour, found by fixed-point
        iteration ``C0 = BP-RP - (k_BP - k_RP) A_V``. ``"wang_chen2019"``: constant
        ratios A_G/A_V = 0.789, A_BP/A_V = 1.002, A_RP/A_V = 0.589 (Wang & Chen
        2019, Table 3; used by L21).
    n_iter : int
        Iterations for the intrinsic colour (converges in 2-3 for A_V < 1).

    Returns
    -------
    dict
        ``{"G": A_G, "BP": A_BP, "RP": A_RP}`` in mag.
    """
    av = np.asarray(a_v, float)
    if method == "wang_chen2019":
        return {band: ratio * av for band, ratio in WANG_CHEN2019_RATIOS.items()}
    if method != "babusiaux2018":
        raise ValueError(f"method must be 'babusiaux2018' or 'wang_chen2019', got {method!r}")
    if bp_rp is None:
        raise ValueError("method 'babusiaux2018' needs the observed bp_rp colour")
    obs = np.asarray(bp_rp, float)
    c0 = obs
    for _ in range(max(1, int(n_iter))):
        k = gaia_extinction_coefficients(c0, av)
        c0 = obs - (k["BP"] - k["RP"]) * av
    k = gaia_extinction_coefficients(c0, av)
    return {band: k[band] * av for band in ("G", "BP", "RP")}


# --------------------------------------------------------------------------- #
# M dwarf sequence: spectral type, Teff, log g; metallicity classes; activity;
# band indices (used by the mock survey; the literature's relations)
# --------------------------------------------------------------------------- #
DWARF_SEQUENCE: Table = Table(
    rows=[
        # SpT (M subtype), Teff [K], R [Rsun], M [Msun]
        (0.0, 3850.0, 0.588, 0.57),
        (0.5, 3770.0, 0.544, 0.54),
        (1.0, 3660.0, 0.501, 0.50),
        (1.5, 3620.0, 0.482, 0.47),
        (2.0, 3560.0, 0.446, 0.44),
        (2.5, 3470.0, 0.421, 0.40),
        (3.0, 3430.0, 0.361, 0.37),
        (3.5, 3270.0, 0.300, 0.27),
        (4.0, 3210.0, 0.274, 0.23),
        (4.5, 3110.0, 0.217, 0.184),
        (5.0, 3060.0, 0.196, 0.162),
        (5.5, 2930.0, 0.156, 0.123),
        (6.0, 2810.0, 0.137, 0.102),
        (6.5, 2740.0, 0.126, 0.093),
        (7.0, 2680.0, 0.120, 0.090),
        (7.5, 2630.0, 0.116, 0.088),
        (8.0, 2570.0, 0.114, 0.085),
        (8.5, 2420.0, 0.104, 0.080),
        (9.0, 2380.0, 0.102, 0.079),
    ],
    names=("spt", "teff", "radius", "mass"),
    units=(None, "K", "solRad", "solMass"),
    meta={
        "reference": "Pecaut & Mamajek 2013, ApJS 208, 9; online table "
        "EEM_dwarf_UBVIJHK_colors_Teff.txt version 2021.03.02 (E. Mamajek)",
        "spt": "M subtype: 0 = M0V ... 9 = M9V",
    },
)
"""Mean M0V-M9V dwarf sequence (Pecaut & Mamajek 2013, updated table v2021.03.02)."""

_SPT = np.asarray(DWARF_SEQUENCE["spt"], float)
_TEFF = np.asarray(DWARF_SEQUENCE["teff"], float)
_SPT_TEFF_COEFFS = np.polyfit(_SPT, _TEFF, 3)  # smooth and monotone; rms 26 K about the rows
_SPT_DENSE = np.linspace(0.0, 9.0, 90_001)
_TEFF_DENSE = np.polyval(_SPT_TEFF_COEFFS, _SPT_DENSE)  # decreasing; inverted by np.interp
_LOGG_ROWS = logg_from_mass_radius(DWARF_SEQUENCE["mass"], DWARF_SEQUENCE["radius"])
_LOGG_COEFFS = np.polyfit((_TEFF - 3000.0) / 1000.0, _LOGG_ROWS, 3)

DWARF_TEFF_RANGE: tuple[float, float] = (float(_TEFF_DENSE[-1]), float(_TEFF_DENSE[0]))
"""Teff range (K) of the M0V-M9V sequence: :func:`spt_to_teff` of M9V and M0V (2385-3833 K)."""


def spt_to_teff(spt: ArrayLike) -> np.ndarray:
    """Effective temperature of an M dwarf of subtype ``spt``.

    A least-squares cubic in ``spt`` through the 19 M0V-M9V rows of
    :data:`DWARF_SEQUENCE` (Pecaut & Mamajek 2013, table v2021.03.02): rms
    26 K, at most 48 K from a row, and smooth and monotone (165 +- 30 K per
    subtype), where interpolating the rows would make the spectra change
    four times faster per kelvin in some half-subtypes than in others.

    Parameters
    ----------
    spt : array_like
        M subtype, 0 (M0V) to 9 (M9V); NaN outside.

    Returns
    -------
    ndarray
        Teff in K, shape of ``spt``.
    """
    x = np.asarray(spt, float)
    return np.where((x >= 0.0) & (x <= 9.0), np.polyval(_SPT_TEFF_COEFFS, x), np.nan)


def teff_to_spt(teff: ArrayLike) -> np.ndarray:
    """M subtype (0 = M0V ... 9 = M9V) of a dwarf of effective temperature ``teff``.

    The inverse of :func:`spt_to_teff` (tabulated every 1e-4 subtypes and
    interpolated).

    Parameters
    ----------
    teff : array_like
        Effective temperature, K.

    Returns
    -------
    ndarray
        Subtype, shape of ``teff``; NaN outside :data:`DWARF_TEFF_RANGE`.
    """
    return np.interp(
        np.asarray(teff, float), _TEFF_DENSE[::-1], _SPT_DENSE[::-1], left=np.nan, right=np.nan
    )


def logg_from_teff(teff: ArrayLike) -> np.ndarray:
    """Main-sequence surface gravity of an M dwarf of effective temperature ``teff``.

    ``log g = 4.438 + log10 M - 2 log10 R`` (Q25 eq. 9) evaluated on the
    M0V-M9V rows of :data:`DWARF_SEQUENCE` (Pecaut & Mamajek 2013), smoothed
    by a least-squares cubic in ``(Teff - 3000 K) / 1000 K`` (rms 0.03 dex
    about the rows).

    Parameters
    ----------
    teff : array_like
        Effective temperature, K; clipped to :data:`DWARF_TEFF_RANGE`.

    Returns
    -------
    ndarray
        log10(g / cm s^-2), shape of ``teff``.
    """
    t = np.clip(np.asarray(teff, float), *DWARF_TEFF_RANGE)
    return np.polyval(_LOGG_COEFFS, (t - 3000.0) / 1000.0)


METALLICITY_CLASSES: dict[str, float] = {"dM": 0.0, "sdM": -0.5, "esdM": -1.0, "usdM": -1.5}
"""Approximate [M/H] (dex) of the zeta metallicity classes of Lepine et al. (2007).

The classes (dwarf zeta > 0.825, sdM 0.5-0.825, esdM 0.2-0.5, usdM < 0.2)
are defined by the TiO/CaH ratio, not by [Fe/H]; the values are class
centres adopted for the mock and each class spans several tenths of a dex.
The Kesseli et al. (2019) templates carry these classes.
"""

ZETA_RELATIONS: dict[str, tuple[float, ...]] = {
    "lepine2007": (-0.164, 0.670, -0.118, -0.050),
    "lepine2013": (-0.588, 2.211, -1.906, 0.622),
}
"""Cubic [TiO5]_Zsun(CaH2 + CaH3), highest power first (Lepine et al. 2007; 2013)."""

# Reid, Hawley & Gizis (1995) windows, Angstrom in air: (feature, continuum)
_INDEX_WINDOWS_AIR = {
    "TiO5": ((7126.0, 7135.0), (7042.0, 7046.0)),
    "CaH2": ((6814.0, 6846.0), (7042.0, 7046.0)),
    "CaH3": ((6960.0, 6990.0), (7042.0, 7046.0)),
}


def active_fraction_west2011(spt: ArrayLike) -> np.ndarray:
    """Fraction of M dwarfs with H-alpha emission as a function of subtype.

    ``0.9 / (1 + exp(-(spt - 5)))``: a logistic approximation (not a fit) to
    the rise of the active fraction from a few per cent at M0-M2 to ~80% at
    M7-M8 in the SDSS DR7 M dwarfs of West et al. (2011, AJ 141, 97).

    Parameters
    ----------
    spt : array_like
        M subtype.

    Returns
    -------
    ndarray
        Probability of being active, shape of ``spt``.
    """
    return 0.9 / (1.0 + np.exp(-(np.asarray(spt, float) - 5.0)))


def air_to_vacuum(wave_air: ArrayLike) -> np.ndarray:
    """Convert air wavelengths to vacuum (Angstrom), IAU standard (Morton 2000).

    Parameters
    ----------
    wave_air : array_like
        Air wavelength, Angstrom (valid above 2000 A).

    Returns
    -------
    ndarray
        Vacuum wavelength, Angstrom.
    """
    w = np.asarray(wave_air, float)
    s2 = (1e4 / w) ** 2
    n = 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)
    return w * n


def _band_mean(wave: np.ndarray, flux: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Mean flux over [lo, hi] Angstrom treating pixels as bins (partial pixels weighted)."""
    edges = pixel_edges(wave)
    cum = np.concatenate(
        [np.zeros(flux.shape[:-1] + (1,)), np.cumsum(flux * np.diff(edges), axis=-1)], axis=-1
    )
    c_lo = _interp_last_axis(lo, edges, cum)
    c_hi = _interp_last_axis(hi, edges, cum)
    return (c_hi - c_lo) / (hi - lo)


def _interp_last_axis(x: float, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    j = int(np.clip(np.searchsorted(xp, x) - 1, 0, xp.size - 2))
    t = (x - xp[j]) / (xp[j + 1] - xp[j])
    return fp[..., j] * (1 - t) + fp[..., j + 1] * t


def spectral_indices(
    wavelength: ArrayLike,
    flux: ArrayLike,
    *,
    vacuum: bool = True,
    zeta: Literal["lepine2007", "lepine2013"] = "lepine2007",
) -> dict[str, np.ndarray]:
    """TiO5, CaH2, CaH3 band indices and the metallicity index zeta_TiO/CaH.

    Indices are ratios of mean flux in a feature window to a continuum
    window (Reid, Hawley & Gizis 1995); ``zeta = (1 - TiO5) / (1 -
    [TiO5]_Zsun)`` with ``[TiO5]_Zsun`` a cubic in ``CaH2 + CaH3``
    (:data:`ZETA_RELATIONS`): about 1 for dwarfs of solar metallicity,
    smaller for metal-poor stars (classes in :data:`METALLICITY_CLASSES`).
    Smaller TiO5 means deeper TiO.

    Parameters
    ----------
    wavelength : array_like, shape (n_pix,)
        Rest-frame wavelength, Angstrom, increasing.
    flux : array_like, shape (n_pix,) or (n_spec, n_pix)
        Flux density (any normalisation).
    vacuum : bool
        True if ``wavelength`` is in vacuum (SDSS, LAMOST, the mock): the
        windows, defined in air, are converted.
    zeta : {"lepine2007", "lepine2013"}
        Which ``[TiO5]_Zsun`` calibration to use.

    Returns
    -------
    dict of ndarray
        ``TiO5``, ``CaH2``, ``CaH3``, ``CaH`` (= CaH2 + CaH3) and ``zeta``,
        each of shape ``flux.shape[:-1]``.
    """
    wave = np.asarray(wavelength, float)
    f = np.asarray(flux, float)
    out: dict[str, np.ndarray] = {}
    for name, (feat, cont) in _INDEX_WINDOWS_AIR.items():
        if vacuum:
            feat = tuple(air_to_vacuum(feat))
            cont = tuple(air_to_vacuum(cont))
        out[name] = _band_mean(wave, f, *feat) / _band_mean(wave, f, *cont)
    cah = out["CaH2"] + out["CaH3"]
    out["CaH"] = cah
    tio5_sun = np.polyval(ZETA_RELATIONS[zeta], cah)
    out["zeta"] = (1.0 - out["TiO5"]) / (1.0 - tio5_sun)
    return out
