"""SLAM, the Stellar LAbel Machine (Zhang et al. 2020; Li et al. 2021 sec. 2; Qiu et al. 2025 sec. 3).

A data-driven spectral model: at every wavelength pixel ``j`` the (normalised,
standardised) flux is a support vector regression on the (standardised)
stellar labels, ``f_j(theta) = sum_i beta_ij k_j(theta_i, theta) + b_j`` with an
RBF kernel of width ``gamma_j``.  Each pixel's ``(C, epsilon, gamma)`` is
chosen from a grid by k-fold cross-validated mean squared error (CV-MSE, Li
eq. 1 / Qiu eq. 1; the CV mean deviation, Qiu eq. 2, is kept too).  Labels of
a new spectrum maximise the likelihood of Li eq. 3 with
``sigma_j^2 = sigma_obs,j^2 + CV-MSE_j``, by Levenberg-Marquardt from the best
point of a precomputed label grid.  With a ``prior``, the labels are
summaries of the posterior of Li eq. 2, ``p(theta|f) ~ p(f|theta) p(theta)``,
with the chi2 of eq. 3 divided by a scale ``s`` chosen by CV
(:mod:`mdslam.slam.posterior`): the MAP, and the posterior mean and standard
deviation, the mean being the headline label.  With
``likelihood="correlated"`` the chi2 is ``r^T Sigma^-1 r`` with ``Sigma`` a
factor model of the covariance of the training set's CV residuals plus the
spectrum's noise (:mod:`mdslam.slam.noise`).

This file is the estimator a reader meets: its parameters, ``fit``,
``predict``/``predict_table``, ``cv_predict``, ``fit_error_law`` and
``save``/``load``.  The work is done by functions in the sibling modules
(listed in :mod:`mdslam.slam`, with where mdslam departs from astroslam).

Flags (bit values of the ``flag`` column): :class:`mdslam.flags.LabelFlag`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy.table import Table
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from .. import checks
from . import cv as _cv
from . import errorlaw, forward, infer, inputs, persistence, quality
from . import table as _table
from ._util import _n_workers, one_blas_thread
from .distribute import BlockRunner
from .screen import screen_search
from .training import (
    _grid_edge_fraction,
    _grid_search_cv,
    _iter_folds,
    _refit_all,
    _search_inputs,
    _standardise,
    check_prune,
    cv_rows,
)

#: Qiu et al. 2025 Table 1 "usable range" (SLAM valid), for ``SLAM(domain=...)``.
QIU2025_USABLE_RANGE = {"fe_h": (-0.6, 0.5), "teff": (3100.0, 3900.0), "logg": (4.45, 4.95)}

#: Default hyperparameter grid (standardised labels and fluxes), 4 x 5 x 6 = 120
#: points.  Wide on purpose: astroslam's reference grid put every pixel on its
#: lowest gamma.  On the real Gaia XP M dwarfs a narrower grid (C <= 30,
#: epsilon <= 0.3, gamma >= 0.03) left 60-80 % of the pixels on an edge; with
#: this one most choices are interior (``grid_edge_fraction_`` after ``fit``).
DEFAULT_C = (1.0, 10.0, 100.0, 1000.0)
DEFAULT_EPSILON = (0.01, 0.03, 0.1, 0.3, 1.0)
DEFAULT_GAMMA = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


class SLAM(RegressorMixin, BaseEstimator):
    """The Stellar LAbel Machine: per-pixel RBF SVR spectral model with ML label inference.

    ``fit(flux, labels)`` learns the spectral model; ``predict(flux, ivar)``
    returns labels.  Hyperparameters are only set here; everything learned ends
    in ``_``.

    Parameters
    ----------
    C, epsilon, gamma : sequence of float
        Grid of SVR penalty, tube half-width (standardised flux units) and RBF
        width (standardised label units, ``k = exp(-gamma |dtheta|^2)``).  Each
        pixel takes the combination of lowest k-fold CV-MSE.
    cv : int, CV splitter or iterable of (train, test)
        Folds for the hyperparameter choice.  An int ``k`` means shuffled
        ``KFold(k, random_state=random_state)`` (Li 2021: k = 10).
    random_state : int
        Seed of the fold shuffle.
    tol : float
        KKT gap at which the CV fits stop (libsvm's criterion and default).
    refit_tol : float
        KKT gap for the final per-pixel fits on the whole training set (these
        are also refined by active-set Newton steps to the exact optimum).
    domain : None, dict or (n_label, 2) array
        Label domain for the "outside domain" flags, in physical units, e.g.
        :data:`QIU2025_USABLE_RANGE` (dict keyed by label name).  Labels not
        given use the training set's min/max.
    low_snr : float
        Spectra with SNR below this are flagged ``LabelFlag.LOW_SNR``.
    min_good_fraction : float
        Spectra with fewer good pixels than this fraction of the model's
        usable pixels are flagged ``LabelFlag.FEW_PIXELS``.
    lm_max_iter, lm_xtol, lm_ftol : LM controls
        Iteration cap; convergence when the step (standardised labels) is below
        ``lm_xtol`` or the relative chi2 decrease below ``lm_ftol``.
    lm_float32 : bool
        Levenberg-Marquardt computes the model's label derivatives (the
        kernel products of the Jacobian) in float32, and the model values,
        chi2 and the acceptance of each step in float64, so it stops at the
        float64 optimum (the posterior's MAP and moments run their kernel
        products in float32).  The maximum-likelihood labels differ from the
        float64 path (False, the default) by ~1e-3 of their formal uncertainty
        (``tests/test_labelling.py`` bounds it at 1e-2).
    lm_sigma_tol : None or float
        Also stop LM when the Gauss-Newton step is below ``lm_sigma_tol`` times the
        labels' formal uncertainty (``g^T (J^T W J)^-1 g < lm_sigma_tol^2``): a tolerance
        in the units that matter for the labels, not in standardised label units.
        None (default): ``lm_xtol``/``lm_ftol`` only.
    lm_damping : {"fixed", "nielsen"}
        How LM's damping changes between iterations (:func:`mdslam.slam.lm.levenberg_marquardt`):
        "fixed" (default) x0.3 after an accepted step and x10 after a rejected one;
        "nielsen" from the ratio of the actual to the predicted chi2 decrease, which
        rejects fewer steps in curved chi2 valleys (same optimum: on 1,000 mock LAMOST
        spectra the labels moved by <= 0.005 formal errors and the mean number of LM
        iterations fell from 24.5 to 20.3).
    lm_rank : None or int
        LM first fits the labels with the forward model projected onto its ``lm_rank``
        leading principal spectra (:func:`mdslam.slam.infer.projected`: the model at the
        training labels, in units of the model error), whose kernel products cost
        ``(n_gamma n_train + n_pix) lm_rank`` instead of ``n_train n_pix`` per spectrum,
        then finishes on the full model, so the labels, chi2 and errors are the full
        model's.  None (default): the full model only.  ``ProjectedModel.residual_chi2``
        is the projection's error (chi2 per training spectrum in units of the model
        error): on the realistic mock LAMOST model (1596 px, 1000 stars, 2 widths)
        6e-3 at 200 and 3e-5 at 300 (``benchmarks/README.md``, "Labelling at survey scale").
    lm_newton : bool
        LM steps with the Hessian of chi2, ``J^T W J`` minus the residuals' curvature term
        (:func:`mdslam.slam.forward.residual_curvature`, one product of the size of a model
        evaluation per accepted step), where it is positive definite, instead of ``J^T W J``
        alone (Gauss-Newton, False: the default).  Gauss-Newton converges slowly where the
        residuals are large; the formal errors stay ``(J^T W J)^-1``.  Independent likelihood only.
    quick_grid : None or int
        Starting points for LM: None uses the training labels; an int ``m``
        adds a regular ``m**n_label`` grid spanning the training labels.
    batch_size : int
        Spectra per vectorised LM batch.
    n_jobs : int or None
        Worker threads (pixel blocks in training, spectrum batches in
        prediction).  None: 1 (scikit-learn's convention); -1: all CPUs
        available to the process.  BLAS runs single-threaded inside
        (multi-threaded BLAS on shared, busy cores is many times slower).
    verbose : bool
        Progress bars (tqdm).
    prior : None, "flat", "training", (n, n_label) array or callable
        Label prior ``p(theta)`` of Li 2021 eq. 2 (:mod:`mdslam.slam.posterior`).
        None: maximum likelihood only (Li eq. 3; no posterior columns).
        ``"flat"``: uniform over the training-label box (10 % margin).
        ``"training"``: a Gaussian with the training labels' mean and
        covariance.  An array: label samples (physical units), a Gaussian with
        their mean and covariance.  A callable: ``log p(labels (m, n_label))``
        in physical units (not saved with the model).  With a prior,
        :meth:`predict` returns the posterior mean.
    chi2_scale : "cv" or float
        ``s`` of the likelihood ``exp(-chi2 / 2s)``: about the number of pixels
        per independent datum (correlated pixels make ``s > 1``).  ``"cv"``:
        chosen in :meth:`fit` among :data:`mdslam.slam.cv.CHI2_SCALE_GRID` by the k-fold CV
        error of the posterior-mean labels (only when ``prior`` is set).
    likelihood : "independent" or "correlated"
        ``"independent"`` (default): the chi2 of Li 2021 eq. 3, every pixel
        independent with variance ``sigma_obs^2 + CV-MSE_j``.  ``"correlated"``:
        ``chi2 = r^T Sigma^-1 r`` with ``Sigma`` a low-rank-plus-diagonal model
        of the covariance of the training set's CV residuals plus each
        spectrum's ``diag(1/ivar)``, the rank chosen by CV in :meth:`fit`
        (:mod:`mdslam.slam.noise`); LM and the posterior run on residuals and
        Jacobians whitened per spectrum.  Set before :meth:`fit`.
    kernel_rank : None or int
        None (default): every SVR is solved with the exact kernel matrix (``O(n^2)``
        memory, ``O(n^3)`` per kernel; practical to a few thousand training stars).
        An int ``m``: the approximate path for large training sets. CV and final fits
        use a Nystrom kernel of at most ``m`` landmarks chosen among the training stars
        by pivoted Cholesky (:func:`mdslam.svr.nystrom_kernel`; ``O(n m)`` memory and
        per ADMM iteration), solved to ``tol``; ``dual_coef_`` then holds the exact-kernel
        expansion coefficients over the landmarks (zero for the other stars), so the
        forward model keeps its form. Its error against the exact SVR is measured in
        ``benchmarks/README.md`` ("Nystrom path") and bounded in ``tests/test_svr.py``.
    solver : "admm", "dcd", "newton", "smo" or "admm-smo"
        Solver of the SVR duals. ``"admm"`` (default): the
        batched ADMM with active-set polish of the exact path.  ``"dcd"``: dual coordinate
        descent on the ``r`` Nystrom features (:mod:`mdslam.slam.lowrank`, needs ``numba``,
        the ``scale`` extra), the same problem and stopping rule; measured slower than ADMM
        on SLAM's problems (``benchmarks/README.md``).  ``"newton"`` (with ``kernel_rank``):
        Newton's method in the ``r + 1`` primal unknowns on the Nystrom features, smoothed
        loss with continuation (:mod:`mdslam.slam.primal`), the same problem and stopping
        rule, ADMM for any solve it leaves above ``tol``; its steps do not grow with ``n``
        as ADMM's iterations do, but each costs a Hessian per pixel: for the final fits of a
        ``cv_subsample`` fit on 15,000 stars 4x less CPU than ADMM at gamma 0.3 and 1.3-1.8x
        less at gamma 1 in 16-pixel batches, by arithmetic slower than ADMM batched over all pixels at
        gamma 1 (``benchmarks/README.md``, "Training at 15,000 stars").  ``"smo"`` (exact kernel only): the CV
        solves by libsvm's SMO on the shared kernel (:mod:`mdslam.slam.smo`, needs ``numba``),
        each C seeded from the next smaller one; the final fits stay ADMM + polish.
        ``"admm-smo"`` (exact kernel only, numba): ADMM + polish to 3,000 iterations, then
        SMO from its solution for the CV solves still above ``tol`` (the large-C ones).
    cv_prune : None, float or sequence of floats
        None (default): every grid point is solved in every CV fold (the exact grid
        search).  A factor ``f > 1``: after the first two folds, a pixel's grid points whose
        CV-MSE so far is above ``f`` times the pixel's best are not solved in the remaining
        folds (their ``cv_mse_grid_`` entries are NaN); the fraction of CV solves saved is
        ``solver_info_["cv_pruned_fraction"]``.  A sequence ``(f_1, f_2, ...)`` prunes after
        every fold: after ``k`` folds, the points above ``f_k`` times the best of those still
        solved (``inf`` skips a step).  :func:`mdslam.slam.harmonic_prune` gives the schedule
        ``f_k = 1 + c / k``: loose where one fold's MSE is noisy, tighter as folds add up.
        How often each changes the choice depends on the problem (how far apart the grid
        points' CV-MSE are, how many test stars a fold has): ``benchmarks/README.md``.
    cv_subsample : None or int
        None (default): the hyperparameter CV runs on all training stars.  An int ``m``:
        it runs on ``m`` training stars drawn at random (:func:`mdslam.sampling.draw`, seed
        ``random_state``; all stars if ``m >= n``), with folds drawn on them as ``cv`` says
        and the exact kernel whatever ``kernel_rank``; the final fits then use every
        training star at each pixel's chosen ``(C, epsilon, gamma)`` (with ``kernel_rank``,
        on its Nystrom kernel).  For training sets too large for a full CV (Li 2021's
        15,000 stars).  ``cv_mse_`` is then the CV-MSE of SVRs trained on ``(k-1)/k m``
        stars, an upper estimate of the final model's error; how often the choice differs
        from the full CV's is measured in ``benchmarks/README.md`` ("Training at 15,000
        stars").  ``solver_info_["cv_n_stars"]`` (also in the model file) says how many
        stars the CV used, ``solver_info_["cv_subsample_seed"]`` the seed of the draw.  The
        likelihood's CV (a ``prior`` with ``chi2_scale="cv"``, or ``likelihood="correlated"``)
        still refits the model on folds of all stars.
    cv_screen : None, int or dict
        None (default): the exact grid search.  An int ``k``, or a dict with ``keep`` (``k``),
        ``n_star``, ``folds`` and ``first_folds``: the screened search (:mod:`mdslam.slam.screen`,
        exact kernel, without ``cv_prune``): the whole grid is first cross-validated with
        ``folds`` folds (default 3) on ``n_star`` stars (default 300) drawn with seed
        ``random_state`` (or, ``first_folds`` = f > 0, on the first f folds of ``cv``, whose
        solves are reused), then each pixel's ``k`` points (default 5) of lowest CV-MSE there
        get the full CV of ``cv``; the others' ``cv_mse_grid_`` entries are NaN.  ``prune`` (a factor
        ``f > 1``, default None) and ``prune_after`` (default 2): after that many folds of the full CV, the
        kept points above ``f`` times the pixel's best kept point so far get no more folds (NaN too;
        ``f = inf`` drops none); ``admm_iter`` (default 3,000): the ``admm_max_iter`` of ``solver="admm-smo"``
        (ADMM iterations after its polish stops, before the SMO finish) in the proxy and the full CV.  Every full-CV solve is held
        to ``tol`` and counted per pixel in ``cv_unconverged_`` as in the exact search;
        ``solver_info_`` gives ``cv_screened_fraction`` (full-CV solves not made) and
        ``cv_screen_n_unconverged`` (the proxy's solves above ``tol``).  Its choices, CV-MSE
        regret and time against the exact search: ``benchmarks/README.md`` ("Realistic grid").

    Attributes
    ----------
    C_, epsilon_, gamma_ : (n_pix,) arrays
        Hyperparameters chosen per pixel.
    cv_mse_, cv_md_ : (n_pix,) arrays
        k-fold CV mean squared error (flux^2; the model variance of Li eq. 3)
        and mean deviation (flux; Qiu eq. 2) of the chosen SVR; ``inf``/NaN
        for pixels without training data.
    cv_mse_scaled_, cv_md_scaled_ : (n_pix,) arrays
        The same in standardised flux units.
    cv_mse_grid_ : (n_pix, n_C, n_epsilon, n_gamma) array
        Standardised CV-MSE over the whole grid (NaN where ``cv_prune`` stopped a point early).
    grid_edge_fraction_ : dict
        Per hyperparameter, fraction of pixels whose choice is on a grid edge.
    dual_coef_ : (n_pix, n_train) array
        SVR dual coefficients ``alpha - alpha*`` (0 for non-support vectors).
    intercept_ : (n_pix,) array
        SVR intercepts (standardised flux).
    X_train_ : (n_train, n_label) array
        Standardised training labels (the support vectors of every pixel).
    quick_flux_ : (n_train, n_pix) float64 array
        Model flux at the training labels, where each spectrum's LM starts
        (:func:`mdslam.slam.infer.start_flux`); stored in the model file.
    label_mean_, label_scale_, flux_mean_, flux_scale_ : arrays
        Standardisation of labels (n_label,) and fluxes (n_pix,).
    label_names_, label_units_ : list of str
    wavelength_ : (n_pix,) array
    rchi2_threshold_ : float
        Reduced chi2 above which a fit is flagged ``LabelFlag.BAD_FIT``:
        :func:`mdslam.checks.rchi2_threshold` of the training spectra fitted by
        the model itself (in-sample; ``inf`` for models saved before it existed).
    knn_threshold_, knn_k_ : float, int
        Distance (standardised labels) of best-fit labels to their ``knn_k_``-th
        nearest training star above which a fit is flagged
        ``LabelFlag.FAR_FROM_TRAINING`` (:func:`mdslam.checks.knn_threshold`).
    training_domain_ : (n_label, 2) array
        Min and max of the training labels (physical units).
    pixel_usable_ : (n_pix,) bool array
    error_law_ : dict or None
        ``a``, ``floor`` (n_label,) of ``sigma^2 = floor^2 + (a/SNR)^2`` and its
        ``snr_range``, set by :meth:`fit_error_law` (:mod:`mdslam.slam.errorlaw`).
    solver_info_ : dict
        Mean ADMM iterations, largest KKT gaps of the CV and final fits, stars and folds of
        the CV (``cv_n_stars``, ``n_folds``).
    cv_unconverged_ : (n_pix,) int array
        CV solves per pixel stopped above libsvm's tolerance ``tol`` (at ``max_iter``);
        set by :meth:`fit`, not saved in the model file.
    chi2_scale_ : float
        The likelihood scale ``s`` in use (``chi2_scale`` or the CV choice; 1
        without a prior).
    chi2_scale_cv_ : dict or None
        ``grid`` (candidate ``s``) and ``score`` (mean over labels of the CV
        MSE of the posterior mean / label variance) of the CV choice.
    posterior_std_scale_ : (n_label, 2) array
        ``f_ref, d`` of the factor ``f_ref * (SNR / posterior_std_snr_ref_)**d``
        on the posterior standard deviation that makes the CV normalised
        residuals ``(mean - truth) / std`` of unit width in every SNR bin
        (:func:`mdslam.slam.posterior.fit_std_calibration`; ``(1, 0)`` without a CV choice).
    posterior_std_snr_ref_ : float
        Reference SNR of that factor (median training SNR).
    noise_factor_, noise_diag_ : (n_pix, k) and (n_pix,) arrays
        ``likelihood="correlated"`` only: loadings ``V`` (flux) and diagonal
        ``d`` (flux^2; ``inf`` on unusable pixels) of the model-error covariance
        ``V V^T + diag(d)`` (:func:`mdslam.slam.noise.fit_factor_model`).
    noise_rank_cv_ : dict
        Its candidate ranks, their held-out log-likelihood ``score`` and the chosen ``rank``.
    """

    def __init__(self, C: Sequence[float] = DEFAULT_C, epsilon: Sequence[float] = DEFAULT_EPSILON,
                 gamma: Sequence[float] = DEFAULT_GAMMA, cv=10, random_state: int | None = 0,
                 tol: float = 1e-3, refit_tol: float = 1e-6, domain=None, low_snr: float = 10.0,
                 min_good_fraction: float = 0.5, lm_max_iter: int = 100, lm_xtol: float = 1e-7,
                 lm_ftol: float = 1e-10, quick_grid: int | None = None, batch_size: int = 256,
                 n_jobs: int | None = None, verbose: bool = False, prior=None,
                 chi2_scale: str | float = "cv", kernel_rank: int | None = None,
                 lm_float32: bool = False, lm_sigma_tol: float | None = None,
                 cv_prune: float | None = None, likelihood: str = "independent", lm_damping: str = "fixed",
                 solver: str = "admm", cv_subsample: int | None = None, lm_rank: int | None = None,
                 lm_newton: bool = False, cv_screen: int | dict | None = None):
        self.C = C
        self.epsilon = epsilon
        self.gamma = gamma
        self.cv = cv
        self.random_state = random_state
        self.tol = tol
        self.refit_tol = refit_tol
        self.domain = domain
        self.low_snr = low_snr
        self.min_good_fraction = min_good_fraction
        self.lm_max_iter = lm_max_iter
        self.lm_xtol = lm_xtol
        self.lm_ftol = lm_ftol
        self.quick_grid = quick_grid
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.prior = prior
        self.chi2_scale = chi2_scale
        self.kernel_rank = kernel_rank
        self.lm_float32 = lm_float32
        self.lm_sigma_tol = lm_sigma_tol
        self.lm_damping = lm_damping
        self.cv_prune = cv_prune
        self.likelihood = likelihood
        self.solver = solver
        self.cv_subsample = cv_subsample
        self.lm_rank = lm_rank
        self.lm_newton = lm_newton
        self.cv_screen = cv_screen

    def set_params(self, **params) -> SLAM:
        """Set parameters (scikit-learn); a fitted model keeps its state and drops its prediction cache.

        Prediction-time parameters (``prior``, ``chi2_scale``, ``quick_grid``,
        ``domain``, ``low_snr``, ``lm_*``, ``batch_size``, ``n_jobs``) take
        effect at the next :meth:`predict`; training parameters at the next :meth:`fit`.
        """
        super().set_params(**params)
        self._reset_cache()
        return self

    # ------------------------------------------------------------------ training
    def fit(self, X: np.ndarray, y: np.ndarray, ivar: np.ndarray | None = None, *,
            wavelength: np.ndarray | None = None, label_names: Sequence[str] | None = None,
            label_units: Sequence[str] | None = None, client=None) -> SLAM:
        """Train the spectral model.

        Parameters
        ----------
        X : (n_star, n_pix) array
            Normalised training fluxes on a common wavelength grid.
        y : (n_star, n_label) array
            Training labels in physical units (e.g. Teff [K], log g [dex], [Fe/H]).
        ivar : (n_star, n_pix) array, optional
            Inverse variances; pixels with ``ivar <= 0`` or non-finite flux are
            excluded from that pixel's regression and CV (libsvm sample weight 0).
        wavelength : (n_pix,) array, optional
            Wavelength grid, stored with the model; spectra given to
            :meth:`predict_table` as :class:`mdslam.spectra.Spectra` must be on it.
        label_names, label_units : sequence of str, optional
            Names (default ``label0, label1, ...``) and units of the labels.
        client : dask.distributed.Client, optional
            Solve the pixel blocks of the grid search and the final fits on
            this Dask cluster (the ``scale`` extra); each kernel's eigen
            decomposition is computed here once and scattered
            (:mod:`mdslam.slam.distribute`).  ``n_jobs`` sets the number of
            blocks (None: the cluster's worker threads); the model is
            bit-identical to the in-process fit with the same ``n_jobs``.

        Returns
        -------
        self
        """
        with one_blas_thread():
            return self._fit(X, y, ivar, wavelength, label_names, label_units, client)

    def _fit(self, X, y, ivar, wavelength, label_names, label_units, client=None) -> SLAM:
        flux, labels, good = inputs.check_training(X, y, ivar)
        _cv.check_likelihood(self.likelihood)
        n, n_pix = flux.shape
        self.label_names_, self.label_units_ = inputs.label_metadata(label_names, label_units, labels.shape[1])
        # --- input checks (mdslam.checks): poison is an error or a logged, counted exclusion
        keep = checks.training_rows(labels, good, self.label_names_, self.label_units_,
                                    self.C, self.epsilon, self.gamma, self.cv)
        if not keep.all():
            flux, labels, good = flux[keep], labels[keep], good[keep]
            ivar = None if ivar is None else np.asarray(ivar, float)[keep]
            n = flux.shape[0]
        # --- end of input checks
        self.wavelength_ = inputs.wavelength_grid(wavelength, n_pix)
        Xs, Ys, scalers = _standardise(flux, labels, good)
        self.label_mean_, self.label_scale_, self.flux_mean_, self.flux_scale_ = scalers
        self.param_grid_ = inputs.hyperparameter_grid(self.C, self.epsilon, self.gamma)
        Cs, es, gs = self.param_grid_["C"], self.param_grid_["epsilon"], self.param_grid_["gamma"]

        # per-pixel (C, epsilon, gamma) of lowest k-fold CV-MSE
        folds = _iter_folds(n, self.cv, self.random_state)
        kr = self.kernel_rank
        if kr is not None and (isinstance(kr, bool) or not isinstance(kr, (int, np.integer)) or kr < 1):
            raise ValueError(f"kernel_rank={kr!r}: must be None (exact kernel) or a positive int (Nystrom landmarks)")
        if self.solver not in ("admm", "dcd", "newton", "smo", "admm-smo"):
            raise ValueError(f"solver={self.solver!r}: must be 'admm', 'dcd', 'newton', 'smo' or 'admm-smo'")
        exact_only = self.solver in ("smo", "admm-smo")
        if exact_only and kr is not None:
            raise ValueError(f"solver={self.solver!r} needs the exact kernel: kernel_rank={kr!r} must be None")
        solver = self.solver if exact_only else (self.solver if kr is not None else "admm")
        runner = BlockRunner.for_fit(None if self.n_jobs is None else _n_workers(self.n_jobs), client)
        prune = check_prune(self.cv_prune)
        rows = cv_rows(n, self.cv_subsample, self.random_state, self.cv)     # all stars or a seeded subsample
        Xc, Yc, gc, cv_folds, cv_kr, cv_solver = _search_inputs(Xs, Ys, good, rows, folds, self.cv,
                                                                self.random_state, kr, solver)
        search = _grid_search_cv if self.cv_screen is None else screen_search(self.cv_screen, self.random_state)
        sse, se, cnt, info = search(Xc, Yc, gc, cv_folds, Cs, es, gs, self.tol, self.verbose, runner, cv_kr,
                                    prune=prune, solver=cv_solver)
        info["cv_n_stars"] = int(rows.size)
        if rows.size < n and isinstance(self.random_state, (int, np.integer)):
            info["cv_subsample_seed"] = int(self.random_state)
        self.cv_unconverged_ = info.pop("cv_unconverged_per_pixel")
        for attr, value in _cv.choose_hyperparameters(sse, se, cnt, Cs, es, gs).items():
            setattr(self, attr, value)
        self.cv_mse_ = self.cv_mse_scaled_ * self.flux_scale_**2
        self.cv_md_ = self.cv_md_scaled_ * self.flux_scale_
        self.grid_edge_fraction_ = _grid_edge_fraction(self)

        # final fits on all training stars, per gamma group
        self.X_train_ = Xs
        self.dual_coef_, self.intercept_, refit_info = _refit_all(
            Xs, Ys, good, self.C_, self.epsilon_, self.gamma_, self.pixel_usable_, self.tol, self.refit_tol,
            self.verbose, runner, kr, solver)
        runner.release()
        self.training_domain_ = np.column_stack([labels.min(axis=0), labels.max(axis=0)])
        self.n_train_ = n
        self.n_features_in_ = n_pix
        self.error_law_ = None
        self.solver_info_ = {**info, **refit_info, "n_folds": len(cv_folds)}
        self._reset_cache()
        self.quick_flux_ = None
        self.quick_flux_ = infer.start_flux(self)          # LM's starting grid, stored with the model
        _cv.fit_likelihood_scale(self, flux, labels, good, ivar, folds)
        # --- fit-quality thresholds (mdslam.checks), learnt from the training set itself
        self.knn_k_ = checks.KNN_K
        self.knn_threshold_ = checks.knn_threshold(Xs, self.knn_k_)
        self.rchi2_threshold_ = checks.rchi2_threshold(infer.training_rchi2(self, flux, good, ivar))
        # --- end of fit-quality thresholds
        return self

    # ------------------------------------------------------------------ forward model
    def _reset_cache(self) -> None:
        self._cache = {}

    def _groups(self, dtype: type = np.float64) -> list[forward.PixelGroup]:
        """Pixels grouped by gamma (:func:`mdslam.slam.forward.pixel_groups`), cached per dtype."""
        cache = getattr(self, "_cache", None)
        if cache is None:
            self._cache = cache = {}
        key = "groups" if dtype == np.float64 else f"groups_{np.dtype(dtype).name}"
        if key not in cache:
            if key != "groups" and "groups" in cache:       # the float64 groups in another precision
                cache[key] = [(g, pix, coef.astype(dtype), b, sv) for g, pix, coef, b, sv in cache["groups"]]
            else:
                cache[key] = forward.pixel_groups(self.gamma_, self.dual_coef_, self.intercept_, dtype)
        return cache[key]

    def _model_scaled(self, Th: np.ndarray, jacobian: bool = False, dtype: type = np.float64,
                      values: bool = True):
        """Standardised model flux (m, n_pix) and optionally d/dtheta_scaled (m, n_pix, L).

        ``dtype=np.float32``: kernel products in single precision; ``values=False``: the
        derivatives only (:func:`mdslam.slam.forward.model_flux`).
        """
        return forward.model_flux(Th, self.X_train_, self._groups(dtype), self.n_features_in_, jacobian, values)

    def predict_flux(self, labels: np.ndarray) -> np.ndarray:
        """Model spectra at given labels (the forward model, all pixels at once).

        Parameters
        ----------
        labels : (m, n_label) or (n_label,) array, physical units.

        Returns
        -------
        (m, n_pix) normalised flux.
        """
        Th = self._scale_labels(labels)
        F, _ = self._model_scaled(Th)
        return self.flux_mean_ + F * self.flux_scale_

    def flux_jacobian(self, labels: np.ndarray) -> np.ndarray:
        """Analytic derivative of the model flux with respect to the labels.

        ``labels`` as for :meth:`predict_flux`; returns an (m, n_pix, n_label)
        array, flux per physical label unit.
        """
        Th = self._scale_labels(labels)
        _, J = self._model_scaled(Th, jacobian=True)
        return J * self.flux_scale_[None, :, None] / self.label_scale_[None, None, :]

    def _scale_labels(self, labels):
        self._check_fitted()
        lab = np.array(labels, dtype=float, ndmin=2)
        if lab.shape[1] != self.label_mean_.size:
            raise ValueError(f"labels have {lab.shape[1]} columns, the model has {self.label_mean_.size}")
        return (lab - self.label_mean_) / self.label_scale_

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "dual_coef_")

    def _check_fitted(self):
        check_is_fitted(self, msg="this SLAM model is not fitted yet: call fit() or SLAM.load()")

    # ------------------------------------------------------------------ inference
    def predict(self, X, ivar=None) -> np.ndarray:
        """Labels of spectra, physical units.

        Without a prior: the maximum-likelihood point (Li 2021 eq. 3).  With
        ``prior`` set: the posterior mean (Li 2021 eq. 2, the likelihood scaled
        by ``chi2_scale_``).

        Parameters
        ----------
        X : (n_spec, n_pix) array or sequence of (n_pix,) arrays
            Normalised fluxes on the model's wavelength grid.
        ivar : same shape as X, optional
            Inverse variances (0 or NaN masks a pixel).  Without it the
            likelihood uses the model CV-MSE alone.

        Returns
        -------
        (n_spec, n_label) array; NaN rows for spectra that could not be fitted
        (see :meth:`predict_table` for flags and uncertainties).
        """
        return infer.infer(self, X, ivar)["labels"]

    def predict_table(self, X, ivar=None, *, snr=None, ids=None) -> Table:
        """Labels, uncertainties, fit diagnostics and flags as an astropy Table.

        Parameters
        ----------
        X, ivar : as for :meth:`predict`; ``X`` may also be a
            :class:`mdslam.spectra.Spectra` on the model's wavelength grid
            (its ivar, ``meta['id']`` and ``meta['snr']`` are then used).
        snr : (n_spec,) array, optional
            Spectral SNR for the flags and the empirical error law; default
            ``median(flux * sqrt(ivar))`` over good pixels.
        ids : (n_spec,) sequence, optional
            Identifiers for an ``id`` column (default ``0..n_spec-1``).

        Returns
        -------
        Table with one row per spectrum: ``id``, ``snr``, one column per label,
        ``e_<label>`` (formal: ``sqrt(diag((J^T W J)^-1))``, not scaled by the
        reduced chi2), ``e_<label>_cv`` (empirical ``sqrt(floor^2 + (a/SNR)^2)``, NaN without
        an error law), ``chi2``, ``rchi2``, ``n_good_pixels``, ``n_iter``,
        ``converged``, ``flag`` (bits: :class:`mdslam.flags.LabelFlag`).

        With ``prior`` set, the headline ``<label>`` is the posterior mean and
        ``e_<label>`` its standard deviation (times ``posterior_std_scale_``
        when ``chi2_scale="cv"``, the scale it was calibrated for);
        the maximum-likelihood labels move to ``<label>_ml`` and
        ``e_<label>_ml`` (formal), and ``<label>_map`` (posterior maximum) and
        ``posterior_n_eff`` (importance-sampling nodes carrying the weight) are
        added.  ``meta['HEADLINE']`` says which estimate the headline is.
        The flags, the ``OUTSIDE_DOMAIN`` bits included, always test the
        maximum-likelihood labels: the prior pulls a star from outside the
        training domain into it, the likelihood alone says where the spectrum
        lies (:func:`mdslam.slam.infer.infer`).
        """
        if hasattr(X, "flux") and hasattr(X, "ivar") and hasattr(X, "meta"):      # a Spectra container
            self._check_fitted()
            X, ivar, ids, snr = inputs.from_spectra(X, ivar, ids, snr, self.wavelength_)
        res = infer.infer(self, X, ivar, snr=snr)
        scale = None if res["posterior"] is None else infer.likelihood_scale(self)
        return _table.label_table(res, self.label_names_, self.label_units_, self.error_law_, ids,
                                  prior=self.prior, chi2_scale=scale, likelihood=self.likelihood)

    def domain_array(self) -> np.ndarray:
        """(n_label, 2) label domain (physical units) used for the outside-domain flags."""
        self._check_fitted()
        return quality.domain_array(self.training_domain_, self.domain, self.label_names_)

    # ------------------------------------------------------------------ CV of labels, error law
    def cv_predict(self, X, y, ivar=None, *, snr=None, ids=None, nested: bool = False) -> Table:
        """k-fold cross-validated labels of the training set (Qiu 2025 sec. 3.3).

        Each fold is predicted by a model trained on the other folds, with the
        same folds as the hyperparameter search (``cv``, ``random_state``).

        Parameters
        ----------
        X, y, ivar : the training data given to :meth:`fit`.
        snr, ids : as for :meth:`predict_table`.
        nested : bool
            False (default): keep this model's per-pixel (C, epsilon, gamma) and
            refit the SVRs (and the standardisation) on each fold's training
            part; with ``likelihood="correlated"`` each fold's noise model is
            refitted, at the model's rank, on the CV residuals of its training
            part only (the model's own saw the held-out stars').  True: rerun the full grid search inside every fold (k times
            the cost of ``fit``; no hyperparameter information leaks).

        Returns
        -------
        Table as :meth:`predict_table` plus ``<label>_true`` columns, rows in
        input order.
        """
        return _cv.cv_predict(self, X, y, ivar, snr=snr, ids=ids, nested=nested)

    def fit_error_law(self, snr, y_true, y_pred, *, n_bins: int = 6, min_per_bin: int = 20) -> Table:
        """Fit the empirical uncertainty law ``sigma^2 = floor^2 + (a / SNR)^2`` per label.

        Delegates to :func:`mdslam.slam.errorlaw.fit_error_law`: the CV scatter in
        equal-count SNR bins, fitted with ``a, floor >= 0`` (never increasing with
        SNR).  The law is stored in ``error_law_`` and used by :meth:`predict_table`
        for ``e_<label>_cv``, with ``e_cv_extrapolated`` outside its SNR range.

        Parameters
        ----------
        snr : (n,) array
        y_true, y_pred : (n, n_label) arrays, physical units (e.g. from :meth:`cv_predict`).
        n_bins, min_per_bin : binning (Qiu: at least ~20 stars per bin).

        Returns
        -------
        The binned table (``snr_lo``, ``snr_hi``, ``snr_median``, ``n``,
        ``bias``, ``scatter``), with the fitted ``a``, ``floor`` in ``meta``.
        """
        self._check_fitted()
        self.error_law_, tab = errorlaw.fit_error_law(snr, y_true, y_pred, self.label_names_,
                                                      n_bins=n_bins, min_per_bin=min_per_bin)
        return tab

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the fitted model to ``path`` (.npz; format in :mod:`mdslam.modelfile`)."""
        persistence.save(self, path)

    @classmethod
    def load(cls, path) -> SLAM:
        """Read a model written by :meth:`save` (no pickle; format checked)."""
        return persistence.load(cls, path)
