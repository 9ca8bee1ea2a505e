"""Mock LAMOST/BOSS M dwarf spectra with known truth: the **mock** data track.

Everything this module returns is a *mock*: semi-empirical spectra built by
interpolating real template spectra, with labels drawn from a real catalogue
and survey-like noise added. It is not a physical model atmosphere, and a
figure made from it must say so (:data:`MOCK_CAPTION`, :meth:`MockSurvey.describe`).
It serves the scale benchmark and lets the pipeline show that it recovers a
known truth (DESIGN.md, data track 4).

Survey grids
------------
Both surveys sample in log10(wavelength / Angstrom) with a step of 1e-4
(69.0 km/s per pixel), vacuum wavelengths, on the same lattice:

========  ==========  ==============================  ==============================
survey    R (FWHM)    native grid (first pixel, n)    mock grid (this module)
========  ==========  ==============================  ==============================
lamost    1800        log10 = 3.5682, 3909 px,        3950-9099 A, 3625 px
                      3700-9099 A (LRS DR files)
boss      2000        log10 = 3.5523, 4648 px,        3950-9150 A, 3649 px
                      3567-10399 A (coadd lattice)
========  ==========  ==============================  ==============================

The mock covers only the wavelengths where every template exists (the
Bochanski composites stop at 9200 A, the Kesseli spectra start at 3910 A),
minus a margin for radial-velocity shifts up to 500 km/s: the pixels are
the survey's own native pixels between 3950 and 9150 A. A
single resolving power per survey is used (the real ones vary with
wavelength and fibre).

How a spectrum is made
----------------------
1. **Templates onto a fine grid.** Every template is rebinned
   flux-conservingly (:func:`mdslam.preprocess.rebin`) onto a log-lambda grid
   four times finer than the survey's (17.3 km/s per fine pixel) and
   convolved with a Gaussian of ``sqrt(sigma_survey^2 - sigma_template^2)``
   in velocity, taking the SDSS templates to have R = 2000 (so BOSS needs no
   convolution and LAMOST a 31 km/s kernel). H-alpha (6554-6575 A) is
   interpolated out of the dwarf sequence (the late Bochanski composites
   include emission from their active members); activity is added back
   explicitly (step 4).
2. **Temperature sequence.** The ten Bochanski et al. (2007) SDSS composite
   dwarfs M0-M9, each scaled to a median of 1 in 6800-8300 A, define
   ``B(lambda, s) = ln f`` at spectral subtypes ``s = 0..9``; between them
   ``B`` is a monotone piecewise-cubic (PCHIP) interpolation in ``s``, pixel by
   pixel (tabulated every 0.02 subtypes). ``Teff`` maps to ``s`` by
   :func:`teff_to_spt`.
3. **Metallicity response.** The 27 Kesseli et al. (2019) SDSS spectra of
   dwarfs (7), subdwarfs (sdM, 2), extreme (esdM, 7) and ultra subdwarfs
   (usdM, 11) give log ratios ``r_i = ln f_i - B(lambda, s_i)`` against the
   dwarf sequence at the same subtype. Pixel by pixel, a weighted
   least-squares fit::

       r_i = c0 + alpha_k(i) + [M/H]_k(i) * beta * x_i,    x_i = clip(s_i, 0, 6) - 3

   gives one response ``alpha_k`` per class k (at M3), a slope ``beta`` with
   subtype shared by all classes and scaled by the class [M/H]
   (:data:`METALLICITY_CLASSES`), and an offset ``c0`` fixed by the Kesseli
   dwarfs (single stars against composites: flux calibration and a few
   tenths of a subtype in TiO depth; discarded). Weights are the templates'
   variances plus a 2% floor. The fit skips H-alpha and the telluric O2 A and
   B bands, which the Kesseli spectra keep uncorrected (the response is a
   straight line across them, so it has no K I 7667/7701 A signal).
   ``alpha`` and ``beta`` are smoothed with a Gaussian of
   ``response_smoothing_kms`` (40 km/s), widened up to 16-fold where the
   templates are faint (the blue end) so the template noise left is about
   uniform. The mock is::

       ln f(lambda; Teff, [M/H]) = B(lambda, s) + sum_k w_k([M/H]) alpha_k(lambda)
                                   + [M/H] beta(lambda) x(s),      s = s(Teff)

   with ``w_k`` the natural-cubic-spline weights of the nodes -1.5, -1.0,
   -0.5, 0 (``alpha = 0`` at 0): smooth (C2) in [M/H], continued as a
   straight line above 0 dex (an extrapolation), and frozen at M6 in type
   (the latest Kesseli subdwarfs). The Lepine et al. (2007) spectra, also in
   the registry, are not used: they cover only 5800-10000 A and come from
   other instruments.
4. **Survey effects**, in this order: H-alpha emission (a Gaussian of the
   instrumental width, equivalent width ``halpha_ew``) for active stars; a
   Doppler shift ``lambda (1 + rv/c)`` (linear interpolation on the fine
   grid); averaging of each four fine pixels into one survey pixel; a smooth
   multiplicative flux-calibration error ``exp(c1 P1 + c2 P2)`` (Legendre
   polynomials over the range, ``c ~ N(0, calib_sigma)``); a scale factor so
   the median flux in 6800-8300 A is ``flux_level`` (arbitrary units, like the
   survey files), so the pipeline's own normalisation is exercised; Gaussian
   noise; cosmic-ray spikes (not masked) and dead pixels (masked, ivar 0).

Fidelity
--------
Honest limits of a semi-empirical mock: the spectra do not respond to log g,
alpha enhancement or anything but (Teff, [M/H]); the metallicity response is
that of the class templates, scaled by *assumed* class metallicities. At
solar metallicity the mock dwarfs have zeta = 1.00 +- 0.05 (M2-M7). At
-0.5 dex (sdM) the mock's zeta is 0.54-0.81 for M3-M7 (Lepine's sdM class:
0.5-0.825). The metal-poor end overshoots: because the response is added in
ln flux to composites whose TiO is already slightly weaker than the Kesseli
dwarfs', mock TiO5 at -1.0/-1.5 dex is ~0.15 higher (weaker TiO) than in the
esdM/usdM templates (mock zeta 0.08-0.33 at -1.0 for M3-M6; esdM templates
0.24-0.40).
B20's labels, which the mock draws by default, reach -0.6 dex at most.

``SNR`` means what LAMOST's ``snri`` means: the median per-pixel S/N in the
SDSS i band (here 6800-8300 A). With ``noise_model="photon"`` (default) the
noise follows the flux, ``sigma = sqrt(F * F_i) / SNR`` with ``F_i`` the median
flux in that band, so the blue end of a late M dwarf is as noisy as in the
real data; ``"constant"`` gives ``sigma = F / SNR`` at every pixel. ``ivar`` is
``1 / sigma^2`` of the noiseless flux.

Relations used
--------------
* Spectral type - Teff - radius - mass of M0V-M9V dwarfs: the mean dwarf
  sequence of Pecaut & Mamajek (2013, ApJS 208, 9), table version 2021.03.02
  (:data:`DWARF_SEQUENCE`); ``Teff(s)`` is a least-squares cubic through its
  rows (rms 26 K; smooth, so the spectra change evenly with Teff) and
  ``s(Teff)`` its inverse. The Mann et al. (2015, ApJ 804, 64) stars give the
  same scale within ~100 K per subtype. Domain: 2385-3833 K (M9-M0).
* log g: ``4.438 + log10 M - 2 log10 R`` (Q25 eq. 9) on the same table,
  smoothed by a cubic in Teff (:func:`logg_from_teff`); the spectra do not
  depend on log g (all templates are dwarfs), it is a label only.
* Metallicity classes: dM 0.0, sdM -0.5, esdM -1.0, usdM -1.5 dex
  (:data:`METALLICITY_CLASSES`). The classes are defined by the
  TiO/CaH index zeta (Lepine et al. 2007, ApJ 669, 1235; boundaries 0.825,
  0.5, 0.2), used for the Kesseli et al. (2019, AJ 157, 63) templates; the
  [M/H] values are *approximate* class centres, and zeta-[Fe/H] calibrations
  (e.g. Woolf, Lepine & Wallerstein 2009; Mann et al. 2013) show each class
  spans several tenths of a dex.
* Labels: the joint (TEFF, FE_H) distribution of Birky et al. (2020,
  ApJ 892, 31) Table 6 (14,828 APOGEE M dwarfs), truncated to the mock's
  domain and smoothed by a small Gaussian jitter (a kernel density estimate).
* SNR: log-normal, median 30, sigma(ln SNR) = 0.75, truncated to [5, 1000]
  (most spectra 10-100, 0.6% above 200, as for LAMOST M dwarf snri; chosen
  by eye, not fitted).
* Activity: the active fraction rises with type as in the SDSS M dwarfs of
  West et al. (2011, AJ 141, 97), approximated by
  ``0.9 / (1 + exp(-(s - 5)))``; emission EW log10(EW/A) ~ N(0.2 + 0.1 s, 0.25).

Determinism
-----------
Spectrum ``i`` of :meth:`MockSurvey.generate` depends only on ``(seed, i)``:
survey spectra come in blocks of 256 that share one
``numpy.random.Generator`` seeded by ``SeedSequence(seed, spawn_key=(0,
i // 256))``, which draws every random number of the block in a fixed
order. So the same seed gives identical arrays, ``generate(n)`` equals the
concatenated chunks of ``iter_chunks(n, k)`` for any ``k``, and
``generate(n, start=m)`` continues a survey without overlap.

Speed: ~2000 spectra/s on one core (100,000 in under a minute), most of it
the fine-grid evaluation; the template basis is built once per survey and
resolution (~3 s, cached).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from astropy.table import Table
from numpy.typing import ArrayLike
from scipy.interpolate import CubicSpline, PchipInterpolator
from scipy.ndimage import gaussian_filter1d
from scipy.special import ndtr, ndtri

from .preprocess import pixel_edges, rebin
from .relations import logg_from_mass_radius
from .spectra import Spectra

__all__ = [
    "MockSurvey",
    "SurveyGrid",
    "SURVEYS",
    "MOCK_CAPTION",
    "MOCK_WAVE_RANGE",
    "I_BAND",
    "TEFF_RANGE",
    "FEH_RANGE",
    "C_KMS",
    "HALPHA_VACUUM",
    "DWARF_SEQUENCE",
    "METALLICITY_CLASSES",
    "ZETA_RELATIONS",
    "spt_to_teff",
    "teff_to_spt",
    "logg_from_teff",
    "active_fraction_west2011",
    "spectral_indices",
    "air_to_vacuum",
]

C_KMS = 299792.458
"""Speed of light, km/s."""

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

HALPHA_VACUUM = 6564.61
"""H-alpha, vacuum wavelength in Angstrom."""

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
# relations: spectral type, Teff, log g, metallicity classes, activity
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

TEFF_RANGE: tuple[float, float] = (float(_TEFF_DENSE[-1]), float(_TEFF_DENSE[0]))
"""Teff domain of the mock (K): :func:`spt_to_teff` of M9V and M0V (2385-3833 K)."""

FEH_RANGE: tuple[float, float] = (-1.5, 0.5)
"""[M/H] domain of the mock (dex): usdM class centre to a mild extrapolation above solar."""


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
    interpolated); NaN outside :data:`TEFF_RANGE`.

    Parameters
    ----------
    teff : array_like
        Effective temperature, K.

    Returns
    -------
    ndarray
        Subtype, shape of ``teff``.
    """
    return np.interp(
        np.asarray(teff, float), _TEFF_DENSE[::-1], _SPT_DENSE[::-1], left=np.nan, right=np.nan
    )


def logg_from_teff(teff: ArrayLike) -> np.ndarray:
    """Main-sequence surface gravity of an M dwarf of effective temperature ``teff``.

    ``log g = 4.438 + log10 M - 2 log10 R`` (Q25 eq. 9) evaluated on the
    M0V-M9V rows of :data:`DWARF_SEQUENCE` (Pecaut & Mamajek 2013), smoothed
    by a least-squares cubic in ``(Teff - 3000 K) / 1000 K`` (rms 0.03 dex
    about the rows). Teff is clipped to :data:`TEFF_RANGE`.

    Parameters
    ----------
    teff : array_like
        Effective temperature, K.

    Returns
    -------
    ndarray
        log10(g / cm s^-2), shape of ``teff``.
    """
    t = np.clip(np.asarray(teff, float), *TEFF_RANGE)
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
    from . import datasets

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


@lru_cache(maxsize=4)
def _build_basis(survey: str, resolution: float, response_smoothing_kms: float) -> _Basis:
    grid = SURVEYS[survey]
    k = grid.mock_indices()
    k_ext = np.arange(k[0] - _PAD, k[-1] + _PAD + 1)
    sub = (np.arange(_OVERSAMPLE) + 0.5) / _OVERSAMPLE - 0.5
    loglam_fine = (grid.loglam_start + grid.dloglam * (k_ext[:, None] + sub[None, :])).ravel()
    dfine = grid.dloglam / _OVERSAMPLE
    wave_fine = 10.0**loglam_fine
    wave = 10.0 ** (grid.loglam_start + grid.dloglam * k)

    v_fine = C_KMS * np.log(10.0) * dfine
    fwhm2sig = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    sig_t = C_KMS / TEMPLATE_RESOLUTION * fwhm2sig
    sig_s = C_KMS / resolution * fwhm2sig
    sigma_px = np.sqrt(max(sig_s**2 - sig_t**2, 0.0)) / v_fine
    iband = (wave_fine >= I_BAND[0]) & (wave_fine <= I_BAND[1])

    boch, subd = _load_templates()

    # --- temperature sequence -------------------------------------------------
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
    dwarf = PchipInterpolator(knots_arr, logf, axis=0, extrapolate=False)

    # --- metallicity response from the Kesseli et al. (2019) spectra -----------
    # per pixel: r_i = c0 + alpha_k(i) + [M/H]_k(i) beta x_i  (dwarfs: r_i = c0)
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
    R = np.asarray(r_rows)  # (n_t, n_fine)
    W = np.asarray(w_rows)
    X = np.asarray(design)  # (n_t, n_par)
    A = np.einsum("tp,ti,tj->pij", W, X, X) + 1e-9 * np.eye(n_par)
    bvec = np.einsum("tp,ti,tp->pi", W, X, R)
    coef = np.linalg.solve(A, bvec[..., None])[..., 0]  # (n_fine, n_par)
    err = np.sqrt(np.diagonal(np.linalg.inv(A), axis1=1, axis2=2))
    c0 = coef[:, 0]
    alpha = np.zeros((_FEH_NODES.size, wave_fine.size))
    resp_err = np.zeros_like(alpha)
    for j, cls in enumerate(_CLASS_ORDER):
        node = int(np.flatnonzero(_FEH_NODES == METALLICITY_CLASSES[cls])[0])
        alpha[node] = coef[:, 1 + j]
        resp_err[node] = err[:, 1 + j]
    beta = coef[:, -1]
    resp = np.vstack([alpha, beta[None, :]])
    for window in _RESPONSE_MASKS:
        resp = _interp_over(wave_fine, resp, window, _sides(window))
    if response_smoothing_kms > 0:
        # noisier where the templates are faint (blue end): smooth more there, so the
        # template noise left in the response is about as large as in 6000-8500 A
        e = np.median(resp_err[[n for n in range(4) if _FEH_NODES[n] != 0.0]], axis=0)
        e = _running_median(np.where(np.isfinite(e), e, np.nanmax(e[np.isfinite(e)])), 101)
        ref = np.median(e[(wave_fine > 6000) & (wave_fine < 8500)])
        ladder = np.arange(_SMOOTH_LADDER)
        level = np.clip(2.0 * np.log2(np.maximum(e / ref, 1.0)), 0, ladder[-1])
        s_px = response_smoothing_kms / v_fine
        stack = np.stack(
            [gaussian_filter1d(resp, s_px * 2.0**k, axis=1, mode="nearest") for k in ladder]
        )  # (levels, 5, n_fine)
        lo = np.floor(level).astype(int)
        hi = np.minimum(lo + 1, ladder[-1])
        t = level - lo
        cols = np.arange(wave_fine.size)
        resp = stack[lo, :, cols].T * (1 - t) + stack[hi, :, cols].T * t
    alpha, beta = resp[:4], resp[4]

    sig_ha = HALPHA_VACUUM / resolution * fwhm2sig
    prof = np.exp(-0.5 * ((wave_fine - HALPHA_VACUUM) / sig_ha) ** 2) / (
        sig_ha * np.sqrt(2 * np.pi)
    )

    s_grid = np.arange(knots_arr[0], knots_arr[-1] + _SPT_STEP / 2, _SPT_STEP)
    table = np.ascontiguousarray(dwarf(np.minimum(s_grid, knots_arr[-1])), dtype=np.float32)
    alpha = np.ascontiguousarray(alpha, dtype=np.float32)
    beta = np.ascontiguousarray(beta, dtype=np.float32)
    prof = prof.astype(np.float32)
    for arr in (loglam_fine, wave_fine, wave, table, alpha, beta, c0, resp_err, prof):
        arr.setflags(write=False)
    return _Basis(
        grid=grid,
        resolution=resolution,
        loglam_fine=loglam_fine,
        wave_fine=wave_fine,
        wave=wave,
        dwarf=dwarf,
        dwarf_knots=knots_arr,
        dwarf_table=table,
        resp_alpha=alpha,
        resp_beta=beta,
        resp_c0=c0,
        resp_err=resp_err,
        halpha_profile=prof,
        halpha_index=int(np.argmin(np.abs(wave_fine - HALPHA_VACUUM))),
        response_templates=tuple(names),
    )


# --------------------------------------------------------------------------- #
# label sources
# --------------------------------------------------------------------------- #
@lru_cache(maxsize=1)
def _b20_labels() -> tuple[np.ndarray, np.ndarray]:
    """(TEFF, FE_H) of every B20 Table 6 star with both values (-9999 = missing)."""
    from . import datasets

    tab = datasets.load("birky2020_table6_full")
    teff = np.asarray(tab["TEFF"], float)
    feh = np.asarray(tab["FE_H"], float)
    ok = np.isfinite(teff) & np.isfinite(feh) & (teff > -9000) & (feh > -9000)
    return teff[ok], feh[ok]


# --------------------------------------------------------------------------- #
# the survey
# --------------------------------------------------------------------------- #
_TRUTH_COLUMNS = {
    "teff_true": ("K", "effective temperature"),
    "feh_true": ("dex", "[M/H] (the metallicity response scale; B20 FE_H when drawn)"),
    "logg_true": ("dex", "log10 g [cm s^-2] from the main-sequence relation (not in the flux)"),
    "spt_true": ("", "M subtype from teff_true (Pecaut & Mamajek 2013)"),
    "snr_true": ("", "median per-pixel S/N in 6800-8300 A asked for"),
    "rv_true": ("km / s", "radial velocity applied"),
    "active": ("", "H-alpha emission added"),
    "halpha_ew_true": ("Angstrom", "H-alpha emission equivalent width added (positive = emission)"),
    "n_cosmic": ("", "cosmic-ray spikes added (not masked)"),
    "n_bad": ("", "dead pixels (mask True, ivar 0, flux 0)"),
}


class MockSurvey:
    """A mock LAMOST or BOSS survey of M dwarfs with known truth (see the module docstring).

    Parameters
    ----------
    survey : {"lamost", "boss"}
        Pixel lattice and resolving power (:data:`SURVEYS`).
    seed : int
        Seed of every random draw; same seed, same arrays.
    resolution : float, optional
        Override the survey's resolving power (must be <= 2000, the templates').
    labels : "b20", "uniform" or Table
        Where (Teff, [M/H]) come from in :meth:`generate`: B20 Table 6's joint
        distribution (default), uniform over the domain, or a table with
        columns ``teff`` and ``feh`` (or ``TEFF``/``FE_H``) to resample.
    teff_range, feh_range : (float, float), optional
        Label domain (K, dex), within :data:`TEFF_RANGE` x :data:`FEH_RANGE`;
        catalogue rows outside are dropped (truncation, not clipping).
    label_jitter : (float, float)
        Gaussian smoothing (K, dex) of resampled catalogue labels, so 10^6
        spectra do not repeat 10^4 label pairs; jittered values are clipped
        to the domain.
    snr_median, snr_sigma, snr_range
        Log-normal SNR distribution: median, sigma of ln SNR, truncation.
    noise_model : {"photon", "constant"}
        ``sigma = sqrt(F F_i) / SNR`` or ``sigma = F / SNR``.
    rv_mean, rv_sigma, rv_max : float
        Radial velocities (km/s) ~ N(rv_mean, rv_sigma) clipped to +-rv_max
        (rv_max <= 500). ``rv_sigma = 0`` (default): rest frame.
    active_fraction : "west2011" or float
        Probability of H-alpha emission: :func:`active_fraction_west2011`
        of the subtype, or a constant.
    calib_sigma : float
        Standard deviation of the Legendre P1, P2 coefficients of the
        multiplicative flux-calibration error (ln units).
    flux_level : (float, float)
        Median flux in 6800-8300 A drawn log-uniform in this range (arbitrary units).
    cosmic_rate : float
        Mean number of cosmic-ray spikes per spectrum (Poisson), 5-50 sigma high.
    bad_pixel_rate : float
        Fraction of dead pixels (Binomial per spectrum).
    logg_scatter : float
        Gaussian scatter (dex) added to :func:`logg_from_teff` for ``logg_true``.
    response_smoothing_kms : float
        Gaussian sigma (km/s) smoothing the metallicity response (widened
        where the templates are faint, see the module docstring).

    Notes
    -----
    ``generate(n)`` holds ``n x n_pix`` float64 flux and ivar and a bool mask
    (~3600 px: 62 kB per spectrum); use :meth:`iter_chunks` for 10^5-10^6
    spectra.

    Examples
    --------
    >>> ms = MockSurvey("lamost", seed=1)                       # doctest: +SKIP
    >>> spectra, truth = ms.generate(1000)                      # doctest: +SKIP
    >>> for chunk, chunk_truth in ms.iter_chunks(100_000, 4096):  # doctest: +SKIP
    ...     pass  # preprocess, predict, compare with chunk_truth
    >>> one = ms.spectrum(teff=3300, feh=-0.4, snr=50, rv=25.0)  # doctest: +SKIP
    """

    def __init__(
        self,
        survey: Literal["lamost", "boss"] = "lamost",
        seed: int = 0,
        *,
        resolution: float | None = None,
        labels: str | Table = "b20",
        teff_range: tuple[float, float] | None = None,
        feh_range: tuple[float, float] | None = None,
        label_jitter: tuple[float, float] = (20.0, 0.02),
        snr_median: float = 30.0,
        snr_sigma: float = 0.75,
        snr_range: tuple[float, float] = (5.0, 1000.0),
        noise_model: Literal["photon", "constant"] = "photon",
        rv_mean: float = 0.0,
        rv_sigma: float = 0.0,
        rv_max: float = 500.0,
        active_fraction: str | float = "west2011",
        calib_sigma: float = 0.05,
        flux_level: tuple[float, float] = (200.0, 5000.0),
        cosmic_rate: float = 2.0,
        bad_pixel_rate: float = 1e-3,
        logg_scatter: float = 0.0,
        response_smoothing_kms: float = 40.0,
    ) -> None:
        if survey not in SURVEYS:
            raise ValueError(f"survey must be one of {sorted(SURVEYS)}, not {survey!r}")
        self.survey = survey
        self.grid = SURVEYS[survey]
        self.seed = int(seed)
        self.resolution = float(resolution if resolution is not None else self.grid.resolution)
        if not 0 < self.resolution <= TEMPLATE_RESOLUTION:
            raise ValueError(
                f"resolution {self.resolution} must be in (0, {TEMPLATE_RESOLUTION}] "
                "(the templates cannot be sharpened)"
            )
        self.teff_range = self._check_range("teff_range", teff_range, TEFF_RANGE)
        self.feh_range = self._check_range("feh_range", feh_range, FEH_RANGE)
        self.labels = labels
        self.label_jitter = (float(label_jitter[0]), float(label_jitter[1]))
        self.snr_median = float(snr_median)
        self.snr_sigma = float(snr_sigma)
        self.snr_range = (float(snr_range[0]), float(snr_range[1]))
        if noise_model not in ("photon", "constant"):
            raise ValueError(f"noise_model must be 'photon' or 'constant', not {noise_model!r}")
        self.noise_model = noise_model
        if not 0 <= rv_max <= 500.0:
            raise ValueError("rv_max must be in [0, 500] km/s (the grid margin)")
        self.rv_mean, self.rv_sigma, self.rv_max = float(rv_mean), float(rv_sigma), float(rv_max)
        if not (active_fraction == "west2011" or 0 <= float(active_fraction) <= 1):
            raise ValueError("active_fraction must be 'west2011' or a probability")
        self.active_fraction = active_fraction
        self.calib_sigma = float(calib_sigma)
        self.flux_level = (float(flux_level[0]), float(flux_level[1]))
        self.cosmic_rate = float(cosmic_rate)
        self.bad_pixel_rate = float(bad_pixel_rate)
        self.logg_scatter = float(logg_scatter)
        self.response_smoothing_kms = float(response_smoothing_kms)
        self._basis = _build_basis(survey, self.resolution, self.response_smoothing_kms)
        if isinstance(labels, str) and labels not in ("b20", "uniform"):
            raise ValueError(f"labels must be 'b20', 'uniform' or a Table, not {labels!r}")
        self._pool: tuple[np.ndarray, np.ndarray] | None = None
        self._block_cache: tuple[tuple[int, bool], dict[str, Any]] | None = None
        self._n_calls = 0
        wave = self._basis.wave
        self._iband = (wave >= I_BAND[0]) & (wave <= I_BAND[1])
        t = np.linspace(-1.0, 1.0, wave.size)
        self._legendre = np.stack([t, 0.5 * (3 * t**2 - 1)])  # (2, n_pix)

    @staticmethod
    def _check_range(
        name: str, value: tuple[float, float] | None, limits: tuple[float, float]
    ) -> tuple[float, float]:
        if value is None:
            return limits
        lo, hi = float(value[0]), float(value[1])
        if not limits[0] <= lo < hi <= limits[1]:
            raise ValueError(f"{name} {value} must lie within {limits}")
        return lo, hi

    # ------------------------------------------------------------------ #
    @property
    def wavelength(self) -> np.ndarray:
        """Mock wavelength grid, vacuum Angstrom, shape (n_pix,)."""
        return self._basis.wave

    @property
    def n_pix(self) -> int:
        """Number of pixels per spectrum."""
        return self._basis.wave.size

    def describe(self) -> str:
        """A caption-ready paragraph saying what these spectra are (starts with 'MOCK')."""
        g = self.grid
        labels = self.labels if isinstance(self.labels, str) else "a user table"
        return (
            f"MOCK {g.name.upper()}-like spectra (not real data): R = {self.resolution:.0f}, "
            f"{self.n_pix} log-lambda pixels of {g.velocity_per_pixel:.1f} km/s, "
            f"{self.wavelength[0]:.0f}-{self.wavelength[-1]:.0f} A (vacuum). Semi-empirical: "
            "PCHIP interpolation in ln flux of the Bochanski et al. (2007) M0-M9 SDSS composites "
            "in spectral type, plus a per-pixel ln-flux metallicity response, a cubic spline in "
            "[M/H] through responses fitted to the Kesseli et al. (2019) sdM/esdM/usdM spectra "
            "(classes placed at -0.5/-1.0/-1.5 dex). Teff-SpT and log g from Pecaut & Mamajek "
            "(2013). "
            f"Labels: {labels} (Teff {self.teff_range[0]:.0f}-{self.teff_range[1]:.0f} K, "
            f"[M/H] {self.feh_range[0]:+.1f} to {self.feh_range[1]:+.1f}); SNR log-normal "
            f"(median {self.snr_median:g}, sigma_ln {self.snr_sigma:g}); {self.noise_model} "
            f"noise; rv ~ N({self.rv_mean:g}, {self.rv_sigma:g}) km/s; seed {self.seed}."
        )

    # ------------------------------------------------------------------ #
    def model(
        self, teff: ArrayLike, feh: ArrayLike, rv: ArrayLike = 0.0, halpha_ew: ArrayLike = 0.0
    ) -> np.ndarray:
        """Noiseless mock flux on the survey grid, before calibration error and scaling.

        Parameters
        ----------
        teff : array_like
            Effective temperature, K, within the mock's Teff domain.
        feh : array_like
            [M/H], dex, within :data:`FEH_RANGE`.
        rv : array_like
            Radial velocity, km/s (absolute value at most 500).
        halpha_ew : array_like
            H-alpha emission equivalent width, Angstrom (>= 0).

        Returns
        -------
        ndarray, shape (m, n_pix)
            Flux (median ~1 in 6800-8300 A for the dwarf sequence), ``m`` the
            broadcast size of the inputs.
        """
        teff_a, feh_a, rv_a, ew_a = (
            np.atleast_1d(np.asarray(v, float))
            for v in np.broadcast_arrays(teff, feh, rv, halpha_ew)
        )
        self._check_labels(teff_a, feh_a, rv_a)
        return self._model_block(teff_to_spt(teff_a), feh_a, rv_a, ew_a)

    def _check_labels(self, teff: np.ndarray, feh: np.ndarray, rv: np.ndarray) -> None:
        if np.any(~np.isfinite(teff)) or np.any((teff < TEFF_RANGE[0]) | (teff > TEFF_RANGE[1])):
            raise ValueError(f"teff outside the mock's domain {TEFF_RANGE} K")
        if np.any(~np.isfinite(feh)) or np.any((feh < FEH_RANGE[0]) | (feh > FEH_RANGE[1])):
            raise ValueError(f"feh outside the mock's domain {FEH_RANGE} dex")
        if np.any(np.abs(rv) > 500.0):
            raise ValueError("|rv| must be <= 500 km/s")

    def _model_block(
        self, spt: np.ndarray, feh: np.ndarray, rv: np.ndarray, ew: np.ndarray
    ) -> np.ndarray:
        """Noiseless flux (m, n_pix) on the survey grid: fine-grid model, H-alpha, shift, binning."""
        b = self._basis
        f = np.exp(b.logflux(spt, feh))  # float32, (m, n_fine)
        if np.any(ew != 0):
            cont = f[:, b.halpha_index]
            f += (ew * cont).astype(np.float32)[:, None] * b.halpha_profile[None, :]
        if np.any(rv != 0):
            f = _shift_rows(f, np.log10(1.0 + rv / C_KMS) / b.dloglam_fine)
        coarse = f[:, 0::_OVERSAMPLE].copy()
        for q in range(1, _OVERSAMPLE):
            coarse += f[:, q::_OVERSAMPLE]
        coarse *= np.float32(1.0 / _OVERSAMPLE)
        return coarse[:, _PAD:-_PAD].astype(np.float64)

    # ------------------------------------------------------------------ #
    # random draws
    # ------------------------------------------------------------------ #
    def _rng(self, *key: int) -> np.random.Generator:
        """A generator seeded by ``SeedSequence(seed, spawn_key=key)``."""
        return np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=key))
        )

    def label_pool(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(teff, feh) rows that :meth:`generate` resamples, inside the domain.

        Returns
        -------
        (ndarray, ndarray) or None
            Teff (K) and [M/H] (dex) of the catalogue rows kept, or None for
            ``labels="uniform"``.
        """
        if self._pool is not None or isinstance(self.labels, str) and self.labels == "uniform":
            return self._pool
        if isinstance(self.labels, str):
            teff, feh = _b20_labels()
        else:
            tab = self.labels
            tcol = "teff" if "teff" in tab.colnames else "TEFF"
            fcol = "feh" if "feh" in tab.colnames else "FE_H"
            if tcol not in tab.colnames or fcol not in tab.colnames:
                raise ValueError("a label table needs columns teff and feh (or TEFF and FE_H)")
            teff = np.asarray(tab[tcol], float)
            feh = np.asarray(tab[fcol], float)
        keep = (
            np.isfinite(teff)
            & np.isfinite(feh)
            & (teff >= self.teff_range[0])
            & (teff <= self.teff_range[1])
            & (feh >= self.feh_range[0])
            & (feh <= self.feh_range[1])
        )
        if not keep.any():
            raise ValueError("no catalogue labels inside the mock's domain")
        self._pool = (teff[keep], feh[keep])
        return self._pool

    def _draw(
        self, rng: np.random.Generator, k: int, *, labels: bool, noise: bool
    ) -> dict[str, Any]:
        """All random numbers of ``k`` spectra from one generator, in a fixed order.

        Labels (if asked), SNR, rv, activity, log g scatter, calibration error,
        flux level, cosmic rays, dead pixels, and last (if asked) the noise
        deviates, shape (k, n_pix).
        """
        d: dict[str, Any] = {}
        if labels:
            pool = self.label_pool()
            if pool is None:
                d["teff"] = rng.uniform(*self.teff_range, size=k)
                d["feh"] = rng.uniform(*self.feh_range, size=k)
            else:
                j = rng.integers(pool[0].size, size=k)
                d["teff"] = pool[0][j] + self.label_jitter[0] * rng.standard_normal(k)
                d["feh"] = pool[1][j] + self.label_jitter[1] * rng.standard_normal(k)
            d["teff"] = np.clip(d["teff"], *self.teff_range)
            d["feh"] = np.clip(d["feh"], *self.feh_range)
        lo, hi = (
            np.log(self.snr_range[0] / self.snr_median),
            np.log(self.snr_range[1] / self.snr_median),
        )
        a, b = ndtr(lo / self.snr_sigma), ndtr(hi / self.snr_sigma)
        d["snr"] = self.snr_median * np.exp(self.snr_sigma * ndtri(a + rng.random(k) * (b - a)))
        d["rv"] = np.clip(
            self.rv_mean + self.rv_sigma * rng.standard_normal(k), -self.rv_max, self.rv_max
        )
        d["u_active"] = rng.random(k)
        d["z_ew"] = rng.standard_normal(k)
        d["z_logg"] = rng.standard_normal(k)
        d["calib"] = self.calib_sigma * rng.standard_normal((k, 2))
        d["level"] = np.exp(rng.uniform(np.log(self.flux_level[0]), np.log(self.flux_level[1]), k))
        n_pix = self.n_pix
        n_cr = rng.poisson(self.cosmic_rate, k)
        d["cr_row"] = np.repeat(np.arange(k), n_cr)
        d["cr_pos"] = rng.integers(n_pix, size=n_cr.sum())
        d["cr_amp"] = rng.uniform(5.0, 50.0, size=n_cr.sum())
        n_bad = rng.binomial(n_pix, self.bad_pixel_rate, k)
        d["bad_row"] = np.repeat(np.arange(k), n_bad)
        d["bad_pos"] = rng.integers(n_pix, size=n_bad.sum())
        if noise:
            d["z"] = rng.standard_normal((k, n_pix))
        return d

    def _activity(
        self, spt: np.ndarray, u: np.ndarray, z: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        p = (
            active_fraction_west2011(spt)
            if self.active_fraction == "west2011"
            else np.full(spt.shape, float(self.active_fraction))
        )
        active = u < p
        return active, np.where(active, 10.0 ** (0.2 + 0.1 * spt + 0.25 * z), 0.0)

    def _block(self, block: int, noise: bool) -> dict[str, Any]:
        """Draws of survey block ``block`` (spectra ``block * _SURVEY_BLOCK`` ...), cached."""
        key = (block, noise)
        if self._block_cache is not None and self._block_cache[0] == key:
            return self._block_cache[1]
        d = self._draw(self._rng(0, block), _SURVEY_BLOCK, labels=True, noise=noise)
        self._block_cache = (key, d)
        return d

    def _survey_draws(self, idx: np.ndarray, noise: bool) -> dict[str, Any]:
        """Draws of survey spectra ``idx`` (increasing, contiguous), gathered from their blocks."""
        out: dict[str, list[np.ndarray]] = {}
        row0 = 0
        for block in range(idx[0] // _SURVEY_BLOCK, idx[-1] // _SURVEY_BLOCK + 1):
            d = self._block(block, noise)
            first = block * _SURVEY_BLOCK
            rows = idx[(idx >= first) & (idx < first + _SURVEY_BLOCK)] - first
            r0, r1 = rows[0], rows[-1] + 1
            for name, val in d.items():
                if name in ("cr_pos", "cr_amp", "bad_pos"):
                    continue
                if name in ("cr_row", "bad_row"):
                    ev = name[:-4]
                    sel = (val >= r0) & (val < r1)
                    out.setdefault(name, []).append(val[sel] - r0 + row0)
                    out.setdefault(ev + "_pos", []).append(d[ev + "_pos"][sel])
                    if ev == "cr":
                        out.setdefault("cr_amp", []).append(d["cr_amp"][sel])
                else:
                    out.setdefault(name, []).append(val[r0:r1])
            row0 += r1 - r0
        return {name: np.concatenate(parts) for name, parts in out.items()}

    # ------------------------------------------------------------------ #
    # public generation API
    # ------------------------------------------------------------------ #
    def spectrum(
        self,
        teff: ArrayLike,
        feh: ArrayLike,
        logg: ArrayLike | None = None,
        snr: ArrayLike | None = None,
        rv: ArrayLike = 0.0,
        *,
        active: ArrayLike = False,
        halpha_ew: ArrayLike | None = None,
        noise: bool = True,
    ) -> Spectra:
        """Mock spectra at given labels.

        Inputs broadcast against each other. Each call draws fresh nuisances
        (calibration error, flux level, noise, cosmics, dead pixels) from a
        generator keyed by ``(seed, call number)``: a new instance with the
        same seed repeats the same sequence of calls exactly.

        Parameters
        ----------
        teff : array_like
            Effective temperature, K (within the mock's Teff domain).
        feh : array_like
            [M/H], dex (within :data:`FEH_RANGE`).
        logg : array_like, optional
            Recorded as ``logg_true``; the flux does not depend on it. Default:
            :func:`logg_from_teff` (plus ``logg_scatter``).
        snr : array_like, optional
            Median per-pixel S/N in 6800-8300 A. Default: drawn from the
            survey's SNR distribution.
        rv : array_like
            Radial velocity, km/s (absolute value at most 500).
        active : array_like of bool
            Add H-alpha emission.
        halpha_ew : array_like, optional
            Emission equivalent width, Angstrom, for active stars. Default:
            drawn (see the module docstring).
        noise : bool
            False: the noiseless flux (no noise, cosmics or dead pixels);
            ``ivar`` is still that of the noise model.

        Returns
        -------
        Spectra
            ``m`` spectra on :attr:`wavelength` (``m`` = broadcast size), with
            the truth columns in ``meta``.
        """
        arrays = np.broadcast_arrays(
            np.asarray(teff, float),
            np.asarray(feh, float),
            np.asarray(rv, float),
            np.asarray(active, bool),
            np.asarray(np.nan if logg is None else logg, float),
            np.asarray(np.nan if snr is None else snr, float),
            np.asarray(np.nan if halpha_ew is None else halpha_ew, float),
        )
        t, f, v, act, lg, sn, ew = (np.atleast_1d(a).ravel().copy() for a in arrays)
        self._check_labels(t, f, v)
        if snr is not None and np.any(~(sn > 0)):
            raise ValueError("snr must be positive")
        call = self._n_calls
        self._n_calls += 1
        d = self._draw(self._rng(1, call), t.size, labels=False, noise=noise)
        spt = teff_to_spt(t)
        _, ew_drawn = self._activity(spt, np.zeros(t.size), d["z_ew"])
        d["snr"] = np.where(np.isnan(sn), d["snr"], sn)
        d["rv"] = v
        d["logg"] = np.where(np.isnan(lg), logg_from_teff(t) + self.logg_scatter * d["z_logg"], lg)
        d["active"] = act
        d["halpha_ew"] = np.where(act, np.where(np.isnan(ew), ew_drawn, np.maximum(ew, 0.0)), 0.0)
        d["teff"], d["feh"] = t, f
        ids = np.array([f"mock-{self.survey}-{self.seed}-call{call}-{j}" for j in range(t.size)])
        return self._render(ids, np.arange(t.size), d, noise)

    def draw_truth(self, n: int, start: int = 0) -> Table:
        """The truth of spectra ``start .. start + n - 1`` of :meth:`generate`, without flux.

        Cheap (no spectra are made); equal to the truth table :meth:`generate`
        returns for the same indices, except ``n_cosmic`` and ``n_bad``.

        Parameters
        ----------
        n : int
            Number of spectra.
        start : int
            Index of the first.

        Returns
        -------
        astropy.table.Table
            Columns ``id``, ``index`` and the truth columns.
        """
        idx = np.arange(start, start + n)
        if n == 0:
            return self._truth_table(
                np.array([], dtype=str),
                idx,
                self._finish(
                    {
                        k: np.array([])
                        for k in ("teff", "feh", "snr", "rv", "u_active", "z_ew", "z_logg")
                    }
                ),
            )
        d = self._finish(self._survey_draws(idx, noise=False))
        return self._truth_table(self._ids(idx), idx, d)

    def generate(self, n: int, start: int = 0, *, noise: bool = True) -> tuple[Spectra, Table]:
        """Spectra ``start .. start + n - 1`` of the mock survey.

        Parameters
        ----------
        n : int
            Number of spectra (memory: ~60 kB each; prefer :meth:`iter_chunks`
            above ~10^4).
        start : int
            Index of the first spectrum; ``generate(n, start=m)`` continues
            ``generate(m)`` without repeating it.
        noise : bool
            False: noiseless flux (see :meth:`spectrum`).

        Returns
        -------
        spectra : Spectra
            Flux in arbitrary units, ivar, mask (dead pixels), meta with the truth.
        truth : astropy.table.Table
            ``id``, ``index`` and the truth columns (units in the column metadata).
        """
        if n < 1 or start < 0:
            raise ValueError("n must be >= 1 and start >= 0")
        idx = np.arange(start, start + n)
        d = self._finish(self._survey_draws(idx, noise))
        spec = self._render(self._ids(idx), idx, d, noise)
        truth = spec.meta[["id", "index", *_TRUTH_COLUMNS]].copy()
        truth.meta = dict(spec.meta.meta)
        return spec, truth

    def iter_chunks(
        self, n: int, chunk_size: int = 10_000, start: int = 0, *, noise: bool = True
    ) -> Iterator[tuple[Spectra, Table]]:
        """Yield :meth:`generate`'s output in chunks, for surveys too large to hold.

        Chunk ``k`` holds spectra ``start + k chunk_size ...``; concatenated,
        the chunks equal ``generate(n, start)`` exactly. Chunk sizes that are
        multiples of 256 waste no random draws.

        Parameters
        ----------
        n : int
            Total number of spectra.
        chunk_size : int
            Spectra per chunk (the last may be shorter).
        start : int
            Index of the first spectrum.
        noise : bool
            False: noiseless flux.

        Yields
        ------
        (Spectra, astropy.table.Table)
            As :meth:`generate`, for one chunk.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        for i0 in range(start, start + n, chunk_size):
            yield self.generate(min(chunk_size, start + n - i0), start=i0, noise=noise)

    # ------------------------------------------------------------------ #
    def _ids(self, idx: np.ndarray) -> np.ndarray:
        return np.array([f"mock-{self.survey}-{self.seed}-{i}" for i in idx], dtype=str)

    def _finish(self, d: dict[str, Any]) -> dict[str, Any]:
        """Turn survey draws into labels: activity and log g follow from Teff."""
        spt = teff_to_spt(d["teff"])
        d["active"], d["halpha_ew"] = self._activity(spt, d["u_active"], d["z_ew"])
        d["logg"] = logg_from_teff(d["teff"]) + self.logg_scatter * d["z_logg"]
        return d

    def _truth_table(
        self,
        ids: np.ndarray,
        index: np.ndarray,
        d: dict[str, Any],
        n_cosmic: np.ndarray | None = None,
        n_bad: np.ndarray | None = None,
    ) -> Table:
        m = index.size
        tab = Table()
        tab["id"] = ids if m else np.array([], dtype="U1")
        tab["index"] = np.asarray(index, dtype=np.int64)
        values = {
            "teff_true": d["teff"],
            "feh_true": d["feh"],
            "logg_true": d["logg"],
            "spt_true": teff_to_spt(d["teff"]),
            "snr_true": d["snr"],
            "rv_true": d["rv"],
            "active": np.asarray(d["active"], bool),
            "halpha_ew_true": d["halpha_ew"],
            "n_cosmic": np.zeros(m, np.int64) if n_cosmic is None else n_cosmic,
            "n_bad": np.zeros(m, np.int64) if n_bad is None else n_bad,
        }
        for name, (unit, desc) in _TRUTH_COLUMNS.items():
            tab[name] = values[name]
            tab[name].unit = unit or None
            tab[name].description = desc
        tab.meta.update(
            {"MOCK": True, "SURVEY": self.survey, "SEED": self.seed, "DESCRIPTION": self.describe()}
        )
        return tab

    def _render(
        self, ids: np.ndarray, index: np.ndarray, d: dict[str, Any], noise: bool
    ) -> Spectra:
        """Flux, ivar and mask of the spectra described by the draws ``d`` (rows of ``index``)."""
        m, n_pix = index.size, self.n_pix
        flux = np.empty((m, n_pix))
        ivar = np.empty((m, n_pix))
        mask = np.zeros((m, n_pix), dtype=bool)
        spt = teff_to_spt(d["teff"])
        snr, level = d["snr"], d["level"]
        for b0 in range(0, m, _BLOCK):
            sl = slice(b0, min(b0 + _BLOCK, m))
            F = self._model_block(spt[sl], d["feh"][sl], d["rv"][sl], d["halpha_ew"][sl])
            F *= np.exp(d["calib"][sl] @ self._legendre)
            F *= (level[sl] / np.median(F[:, self._iband], axis=1))[:, None]
            Fp = np.maximum(F, 1e-4 * level[sl, None])
            if self.noise_model == "photon":
                sigma = np.sqrt(Fp * level[sl, None]) / snr[sl, None]
            else:
                sigma = Fp / snr[sl, None]
            ivar[sl] = 1.0 / sigma**2
            if noise:
                F += sigma * d["z"][sl]
            flux[sl] = F
            if noise:
                cr = (d["cr_row"] >= sl.start) & (d["cr_row"] < sl.stop)
                r, c = d["cr_row"][cr], d["cr_pos"][cr]
                flux[r, c] += d["cr_amp"][cr] * sigma[r - b0, c]
        n_cr = np.zeros(m, np.int64)
        n_bad = np.zeros(m, np.int64)
        if noise:
            flux[d["bad_row"], d["bad_pos"]] = 0.0
            ivar[d["bad_row"], d["bad_pos"]] = 0.0
            mask[d["bad_row"], d["bad_pos"]] = True
            n_cr = np.bincount(d["cr_row"], minlength=m)
            n_bad = mask.sum(axis=1)
        meta = self._truth_table(ids, index, d, n_cr, n_bad)
        meta["file"] = np.array([""] * m, dtype="U1")
        meta["snr"] = snr
        meta["flag"] = np.zeros(m, np.int64)
        meta["flag_reason"] = np.array([""] * m, dtype="U1")
        return Spectra(self.wavelength.copy(), flux, ivar, mask, meta)


def _shift_rows(f: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Shift each row of ``f`` by ``shift`` pixels (positive: to larger index), linear interpolation.

    ``out[k] = f(k - shift)``; positions beyond the ends take the end values.
    """
    out = f.copy()
    n = f.shape[1]
    g0 = np.empty(n, dtype=f.dtype)
    g1 = np.empty(n, dtype=f.dtype)
    for j, s in enumerate(shift):
        if s == 0:
            continue
        n0 = int(np.floor(s))
        phi = f.dtype.type(s - n0)
        _shifted(f[j], n0, g1)  # f[k - n0]
        _shifted(f[j], n0 + 1, g0)  # f[k - n0 - 1]
        np.multiply(g1, 1 - phi, out=out[j])
        out[j] += phi * g0
    return out


def _shifted(src: np.ndarray, d: int, out: np.ndarray) -> None:
    """``out[k] = src[clip(k - d, 0, n - 1)]`` for an integer ``d`` with ``|d| < n``."""
    n = src.size
    if d >= 0:
        out[d:] = src[: n - d]
        out[:d] = src[0]
    else:
        out[: n + d] = src[-d:]
        out[n + d :] = src[-1]
