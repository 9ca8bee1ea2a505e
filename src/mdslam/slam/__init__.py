"""SLAM, the Stellar LAbel Machine (Zhang et al. 2020; Li et al. 2021 sec. 2; Qiu et al. 2025 sec. 3).

The estimator is :class:`SLAM` (:mod:`mdslam.slam.estimator`); its parts live
in their own modules:

* :mod:`~mdslam.slam.inputs` -- training arrays checked, spectra coerced, likelihood weights;
* :mod:`~mdslam.slam.training` -- standardisation, CV folds, per-pixel grid search, final SVR fits;
* :mod:`~mdslam.slam.distribute` -- pixel blocks of the SVR solves in threads or on a Dask cluster;
* :mod:`~mdslam.slam.cv` -- per-pixel hyperparameter choice, the chi2 scale by CV, CV labels;
* :mod:`~mdslam.slam.forward` -- the forward model and its analytic Jacobian;
* :mod:`~mdslam.slam.infer` -- labels of spectra: quick-grid start, batched LM, posterior;
* :mod:`~mdslam.slam.lm` -- batched Levenberg-Marquardt;
* :mod:`~mdslam.slam.posterior` -- priors, MAP and posterior moments (Li 2021 eq. 2);
* :mod:`~mdslam.slam.noise` -- the correlated-pixel likelihood: CV-residual covariance, whitening;
* :mod:`~mdslam.slam.quality` -- SNR, reduced chi2, label domain and flag bits;
* :mod:`~mdslam.slam.table` -- the label table of ``predict_table``;
* :mod:`~mdslam.slam.errorlaw` -- the empirical uncertainty law ``sigma^2 = floor^2 + (a/SNR)^2``;
* :mod:`~mdslam.slam.fixed` -- a model refitted at given per-pixel hyperparameters (no grid search);
* :mod:`~mdslam.slam.persistence` -- the model to and from its file (:mod:`mdslam.modelfile`).

Where mdslam departs from the published code (astroslam):

* :class:`SLAM` -- a scikit-learn estimator (``fit``/``predict``,
  ``get_params``/``set_params``/``clone``).  Training solves the SVR duals of
  all pixels together (:mod:`mdslam.svr`), so it is much faster than one
  libsvm call per pixel, and reaches libsvm's optimum (same KKT stopping rule;
  the final fit is refined to the exact optimum).
* CV folds are shuffled with a seed (astroslam's are not).
* The model variance is the CV-MSE of Li eq. 3 (astroslam: in-sample MSE,
  turned into an inverse variance as ``mse**-2``).
* Labels come from Levenberg-Marquardt with an analytic Jacobian (astroslam:
  ``least_squares(method="trf", loss="soft_l1")`` with finite differences).
* Formal uncertainties are ``sqrt(diag((J^T W J)^-1))``, *not* scaled by the
  reduced chi2 (the table gives ``rchi2`` to do so); empirical uncertainties
  replace Qiu eqs. 6-8's ``sigma = a * SNR**b`` by ``sigma^2 = floor^2 + (a/SNR)^2`` fitted to CV scatter
  (:meth:`SLAM.fit_error_law`).
* Optionally (``likelihood="correlated"``) the chi2 of eqs. 2-3 counts the
  correlations between pixels: ``r^T Sigma^-1 r`` with ``Sigma`` a factor
  model of the CV residual covariance plus the spectrum's noise (Li eq. 3
  is the diagonal of this).
* Pixels with no usable training flux, or masked in a spectrum (ivar 0 /
  NaN), drop out of the likelihood; astroslam's silent drop of pixels with
  scaled ivar < 1 is not reproduced.
"""

from . import _util, training
from .estimator import DEFAULT_C, DEFAULT_EPSILON, DEFAULT_GAMMA, QIU2025_USABLE_RANGE, SLAM
from .fixed import fit_fixed
from .quality import describe_flag
from .training import harmonic_prune

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

__all__ = ["SLAM", "QIU2025_USABLE_RANGE", "DEFAULT_C", "DEFAULT_EPSILON", "DEFAULT_GAMMA", "describe_flag",
           "fit_fixed", "harmonic_prune"]
