"""mdslam: M dwarf stellar parameters with SLAM, the Stellar LAbel Machine.

A thin, fast package behind a rerunnable research compendium that reproduces
Li et al. (2021, LAMOST M dwarfs) and Qiu et al. (2025, SDSS-V BOSS M dwarfs).

Modules (one job each): ``datasets`` (registry, cache, offline mirror),
``spectra`` (readers and the ``Spectra`` container), ``preprocess``
(rest frame, rebinning, continuum normalisation, masks), ``slam`` (the
estimator), ``selection`` (Gaia cuts, CMD regions, cross-matches),
``relations`` (the papers' formulas), ``validation`` (comparison statistics),
``mock`` (survey-scale mock spectra), ``plots`` and ``cli``.
"""

__version__ = "0.1.0"
