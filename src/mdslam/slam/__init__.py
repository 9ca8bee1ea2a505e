"""SLAM, the Stellar LAbel Machine (Zhang et al. 2020; Li et al. 2021 sec. 2; Qiu et al. 2025 sec. 3).

The estimator is :class:`SLAM` (:mod:`mdslam.slam.estimator`); its parts live
in their own modules:

* :mod:`~mdslam.slam.training` -- standardisation, CV folds, per-pixel grid search, final SVR fits;
* :mod:`~mdslam.slam.forward` -- the forward model and its analytic Jacobian;
* :mod:`~mdslam.slam.lm` -- batched Levenberg-Marquardt;
* :mod:`~mdslam.slam.errorlaw` -- the empirical uncertainty law ``sigma = a * SNR**b``.
"""

from . import _util, training
from .estimator import (
    DEFAULT_C,
    DEFAULT_EPSILON,
    DEFAULT_GAMMA,
    QIU2025_USABLE_RANGE,
    SLAM,
    describe_flag,
)

# private helpers, importable from here as before the split (tests, benchmarks)
_n_workers = _util._n_workers
_progress = _util._progress
_grid_edge_fraction = training._grid_edge_fraction
_grid_search_cv = training._grid_search_cv
_iter_folds = training._iter_folds
_n_folds = training._n_folds
_refit_all = training._refit_all
_solve_parallel = training._solve_parallel
_standardise = training._standardise

__all__ = [
    "SLAM",
    "QIU2025_USABLE_RANGE",
    "DEFAULT_C",
    "DEFAULT_EPSILON",
    "DEFAULT_GAMMA",
    "describe_flag",
]

