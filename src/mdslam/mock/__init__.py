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

from ..constants import C_KMS

# the M dwarf relations the mock uses, defined and documented in mdslam.relations;
# importable from here for one release (they were defined here before)
from ..relations import (  # noqa: F401
    DWARF_SEQUENCE,
    METALLICITY_CLASSES,
    ZETA_RELATIONS,
    active_fraction_west2011,
    air_to_vacuum,
    logg_from_teff,
    spectral_indices,
    spt_to_teff,
    teff_to_spt,
)
from .basis import (
    HALPHA_VACUUM,
    I_BAND,
    MOCK_CAPTION,
    MOCK_WAVE_RANGE,
    SURVEYS,
    TEMPLATE_RESOLUTION,
    SurveyGrid,
)
from .survey import FEH_RANGE, TEFF_RANGE, MockConfig, MockSurvey

__all__ = [
    "MockSurvey",
    "MockConfig",
    "SurveyGrid",
    "SURVEYS",
    "MOCK_CAPTION",
    "MOCK_WAVE_RANGE",
    "I_BAND",
    "TEFF_RANGE",
    "FEH_RANGE",
    "TEMPLATE_RESOLUTION",
    "C_KMS",
    "HALPHA_VACUUM",
]
