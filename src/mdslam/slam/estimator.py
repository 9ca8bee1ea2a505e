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
deviation, the mean being the headline label.

What is here, and where mdslam departs from the published code (astroslam):

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
  follow Qiu eqs. 6-8, ``sigma = a * SNR**b`` fitted to CV scatter
  (:meth:`SLAM.fit_error_law`).
* Pixels with no usable training flux, or masked in a spectrum (ivar 0 /
  NaN), drop out of the likelihood; astroslam's silent drop of pixels with
  scaled ivar < 1 is not reproduced.

Flags (bit values of the ``flag`` column): :class:`mdslam.flags.LabelFlag`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from astropy.table import Table
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from .. import checks, modelfile
from ..flags import LABEL_FLAG_MEANING, LabelFlag, label_flag_meanings
from . import errorlaw, forward, lm, posterior
from ._util import _n_workers, _progress
from .distribute import BlockRunner
from .training import (
    _grid_edge_fraction,
    _grid_search_cv,
    _iter_folds,
    _n_folds,
    _refit_all,
    _standardise,
)

__all__ = [
    "SLAM",
    "QIU2025_USABLE_RANGE",
    "DEFAULT_C",
    "DEFAULT_EPSILON",
    "DEFAULT_GAMMA",
    "describe_flag",
]

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

#: Candidate chi2 scales ``s`` (likelihood ``exp(-chi2 / 2s)``) for ``chi2_scale="cv"``.
CHI2_SCALE_GRID = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 40.0)


def describe_flag(flag: int, label_names: Sequence[str] = ()) -> list[str]:
    """Human-readable meanings of the bits set in ``flag``.

    Parameters
    ----------
    flag : int
        A value of the ``flag`` column of :meth:`SLAM.predict_table`.
    label_names : sequence of str
        The model's label names, to name the "outside domain" bits.
    """
    return label_flag_meanings(flag, label_names)


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
        chosen in :meth:`fit` among :data:`CHI2_SCALE_GRID` by the k-fold CV
        error of the posterior-mean labels (only when ``prior`` is set).

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
        Standardised CV-MSE over the whole grid.
    grid_edge_fraction_ : dict
        Per hyperparameter, fraction of pixels whose choice is on a grid edge.
    dual_coef_ : (n_pix, n_train) array
        SVR dual coefficients ``alpha - alpha*`` (0 for non-support vectors).
    intercept_ : (n_pix,) array
        SVR intercepts (standardised flux).
    X_train_ : (n_train, n_label) array
        Standardised training labels (the support vectors of every pixel).
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
        ``a``, ``b`` (n_label,) of ``sigma = a * SNR**b``, set by :meth:`fit_error_law`.
    solver_info_ : dict
        Mean ADMM iterations, largest KKT gaps of the CV and final fits.
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
    """

    def __init__(self, C: Sequence[float] = DEFAULT_C, epsilon: Sequence[float] = DEFAULT_EPSILON,
                 gamma: Sequence[float] = DEFAULT_GAMMA, cv=10, random_state: int | None = 0,
                 tol: float = 1e-3, refit_tol: float = 1e-6, domain=None, low_snr: float = 10.0,
                 min_good_fraction: float = 0.5, lm_max_iter: int = 100, lm_xtol: float = 1e-7,
                 lm_ftol: float = 1e-10, quick_grid: int | None = None, batch_size: int = 256,
                 n_jobs: int | None = None, verbose: bool = False, prior=None,
                 chi2_scale: str | float = "cv"):
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
        with threadpool_limits(limits=1, user_api="blas"):
            return self._fit(X, y, ivar, wavelength, label_names, label_units, client)

    def _fit(self, X, y, ivar, wavelength, label_names, label_units, client=None) -> SLAM:
        flux, labels, good = self._check_training(X, y, ivar)
        n, n_pix = flux.shape
        L = labels.shape[1]
        self.label_names_ = list(label_names) if label_names is not None else [f"label{k}" for k in range(L)]
        self.label_units_ = list(label_units) if label_units is not None else [""] * L
        if len(self.label_names_) != L or len(self.label_units_) != L:
            raise ValueError(f"label_names/label_units must have {L} entries")
        # --- input checks (mdslam.checks): poison is an error or a logged, counted exclusion
        keep = checks.training_rows(labels, good, self.label_names_, self.label_units_,
                                    self.C, self.epsilon, self.gamma, self.cv)
        if not keep.all():
            flux, labels, good = flux[keep], labels[keep], good[keep]
            ivar = None if ivar is None else np.asarray(ivar, float)[keep]
            n = flux.shape[0]
        # --- end of input checks
        self.wavelength_ = (np.arange(n_pix, dtype=float) if wavelength is None
                            else np.asarray(wavelength, float).ravel())
        if self.wavelength_.size != n_pix:
            raise ValueError(f"wavelength has {self.wavelength_.size} entries, flux has {n_pix} pixels")

        Xs, Ys, scalers = _standardise(flux, labels, good)
        self.label_mean_, self.label_scale_, self.flux_mean_, self.flux_scale_ = scalers
        Cs = np.asarray(self.C, float).ravel()
        es = np.asarray(self.epsilon, float).ravel()
        gs = np.asarray(self.gamma, float).ravel()
        if min(Cs.size, es.size, gs.size) == 0 or np.any(Cs <= 0) or np.any(es < 0) or np.any(gs <= 0):
            raise ValueError("C and gamma grids must be positive, epsilon non-negative, none empty")
        self.param_grid_ = {"C": Cs, "epsilon": es, "gamma": gs}

        folds = _iter_folds(n, self.cv, self.random_state)
        runner = BlockRunner.for_fit(None if self.n_jobs is None else _n_workers(self.n_jobs), client)
        sse, se, cnt, info = _grid_search_cv(Xs, Ys, good, folds, Cs, es, gs, self.tol, self.verbose, runner)
        with np.errstate(invalid="ignore", divide="ignore"):
            mse = sse / cnt                                   # (nC, neps, ng, n_pix)
            md = se / cnt
        flat = mse.reshape(-1, n_pix)
        usable = cnt > 0
        best = np.zeros(n_pix, int)
        if usable.any():
            best[usable] = np.nanargmin(np.where(np.isfinite(flat[:, usable]), flat[:, usable], np.inf), axis=0)
        ic, ie, ig = np.unravel_index(best, mse.shape[:3])
        self.C_ = Cs[ic]
        self.epsilon_ = es[ie]
        self.gamma_ = gs[ig]
        self.cv_mse_grid_ = np.moveaxis(mse, -1, 0)              # (n_pix, nC, neps, ng), scaled
        self.cv_mse_scaled_ = np.where(usable, flat[best, np.arange(n_pix)], np.inf)
        self.cv_md_scaled_ = np.where(usable, md.reshape(-1, n_pix)[best, np.arange(n_pix)], np.nan)
        self.cv_mse_ = self.cv_mse_scaled_ * self.flux_scale_**2
        self.cv_md_ = self.cv_md_scaled_ * self.flux_scale_
        self.pixel_usable_ = usable
        self.grid_edge_fraction_ = _grid_edge_fraction(self)

        # final fits on all training stars, per gamma group
        self.X_train_ = Xs
        self.dual_coef_, self.intercept_, refit_info = _refit_all(
            Xs, Ys, good, self.C_, self.epsilon_, self.gamma_, usable, self.tol, self.refit_tol,
            self.verbose, runner)
        runner.release()
        self.training_domain_ = np.column_stack([labels.min(axis=0), labels.max(axis=0)])
        self.n_train_ = n
        self.n_features_in_ = n_pix
        self.error_law_ = None
        self.solver_info_ = {**info, **refit_info, "n_folds": len(folds)}
        self._reset_cache()
        self._fit_likelihood_scale(flux, labels, good, ivar, folds)
        # --- fit-quality thresholds (mdslam.checks), learnt from the training set itself
        self.knn_k_ = checks.KNN_K
        self.knn_threshold_ = checks.knn_threshold(Xs, self.knn_k_)
        self.rchi2_threshold_ = checks.rchi2_threshold(self._training_rchi2(flux, good, ivar))
        # --- end of fit-quality thresholds
        return self

    def _fit_likelihood_scale(self, flux, labels, good, ivar, folds) -> None:
        """Set ``chi2_scale_`` (CV choice or given) and ``posterior_std_scale_``.

        For ``chi2_scale="cv"`` with a prior: every fold is predicted by the model
        refitted on the other folds (per-pixel hyperparameters fixed), the
        posterior mean is computed at every candidate ``s`` of
        :data:`CHI2_SCALE_GRID`, and the ``s`` of lowest mean normalised MSE
        (MSE / label variance, averaged over labels) is kept.  At that ``s``,
        the width of ``(mean - truth) / std`` per label and SNR bin gives
        ``posterior_std_scale_``.
        """
        L = labels.shape[1]
        self.chi2_scale_cv_ = None
        self.posterior_std_scale_ = np.column_stack([np.ones(L), np.zeros(L)])
        self.posterior_std_snr_ref_ = 1.0
        if self.chi2_scale != "cv":
            s = float(self.chi2_scale)
            if not s > 0:
                raise ValueError(f"chi2_scale must be 'cv' or a positive number, got {self.chi2_scale!r}")
            self.chi2_scale_ = s
            return
        self.chi2_scale_ = 1.0
        if self.prior is None:
            return
        grid = np.asarray(CHI2_SCALE_GRID, float)
        n = labels.shape[0]
        means = np.full((grid.size, n, L), np.nan)
        stds = np.full((grid.size, n, L), np.nan)
        ivar_arr = None if ivar is None else np.asarray(ivar, float)
        for tr, te in _progress(folds, self.verbose, "chi2 scale CV", unit="fold"):
            sub = self._refit_fixed(flux[tr], labels[tr], good[tr])
            Xte = np.where(good[te], flux[te], np.nan)
            w = sub._weights(Xte, None if ivar_arr is None else ivar_arr[te])
            fobs = np.where(w > 0, Xte, 0.0)
            ok = (w > 0).sum(axis=1) > L
            idx = te[ok]
            with threadpool_limits(limits=1, user_api="blas"):
                th, cov, *_ = sub._lm_batch(fobs[ok], w[ok])
                for k, s in enumerate(grid):
                    _, mu, C, _ = sub._posterior_batch(fobs[ok], w[ok], th, s)
                    means[k, idx], stds[k, idx] = sub._physical(mu, C)
        best, score = posterior.choose_scale(means, labels)
        self.chi2_scale_ = float(grid[best])
        self.chi2_scale_cv_ = {"grid": grid, "score": score}
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (means[best] - labels) / stds[best]
        self.posterior_std_scale_, self.posterior_std_snr_ref_ = posterior.fit_std_calibration(
            z, self._snr(flux, good, ivar_arr))

    def _fit_quality_flags(self, chi2, n_good, labels, flux) -> np.ndarray:
        """BAD_FIT, FAR_FROM_TRAINING and NOT_NORMALISED bits (:func:`mdslam.checks.fit_flags`), (n,)."""
        usable = self.pixel_usable_
        return checks.fit_flags(
            _rchi2(chi2, n_good, self.label_mean_.size), (labels - self.label_mean_) / self.label_scale_,
            self.X_train_, flux, rchi2_threshold=getattr(self, "rchi2_threshold_", np.inf),
            knn_threshold=getattr(self, "knn_threshold_", np.inf), knn_k=getattr(self, "knn_k_", checks.KNN_K),
            flux_level=float(np.median(self.flux_mean_[usable])) if usable.any() else np.nan)

    def _training_rchi2(self, flux, good, ivar) -> np.ndarray:
        """Reduced chi2 of the maximum-likelihood fits of the training spectra (in-sample), (n_train,)."""
        X = np.where(good, flux, np.nan)
        w = self._weights(X, None if ivar is None else np.asarray(ivar, float))
        fobs = np.where(w > 0, X, 0.0)
        n_good = (w > 0).sum(axis=1)
        L = self.label_mean_.size
        out = np.full(X.shape[0], np.nan)
        ok = n_good > L
        if ok.any():
            with threadpool_limits(limits=1, user_api="blas"):
                self._quick_grid()
                c2 = self._lm_batch(fobs[ok], w[ok])[2]
            out[ok] = _rchi2(c2, n_good[ok], L)
        return out

    def _snr(self, flux, ok, ivar) -> np.ndarray:
        """Median ``|flux| sqrt(ivar)`` over the pixels ``ok`` (n,), NaN without ivar."""
        n = flux.shape[0]
        snr = np.full(n, np.nan)
        if ivar is None:
            return snr
        with np.errstate(invalid="ignore"):
            s = np.where(ok & (ivar > 0), np.abs(flux) * np.sqrt(np.where(ivar > 0, ivar, 0)), np.nan)
        has = np.isfinite(s).any(axis=1)
        snr[has] = np.nanmedian(s[has], axis=1)
        return snr

    def _check_training(self, X, y, ivar):
        flux = np.array(X, dtype=float, ndmin=2)
        labels = np.array(y, dtype=float)
        if labels.ndim == 1:
            labels = labels[:, None]
        if flux.ndim != 2 or labels.ndim != 2:
            raise ValueError("X must be (n_star, n_pix) and y (n_star, n_label)")
        if flux.shape[0] != labels.shape[0]:
            raise ValueError(f"X has {flux.shape[0]} spectra but y has {labels.shape[0]} rows")
        if not np.all(np.isfinite(labels)):
            raise ValueError("training labels must be finite (drop stars with missing labels)")
        good = np.isfinite(flux)
        if ivar is not None:
            ivar = np.asarray(ivar, float)
            if ivar.shape != flux.shape:
                raise ValueError(f"ivar shape {ivar.shape} != flux shape {flux.shape}")
            good &= np.isfinite(ivar) & (ivar > 0)
        return np.where(good, flux, 0.0), labels, good

    # ------------------------------------------------------------------ forward model
    def _reset_cache(self) -> None:
        self._cache = {}

    def _groups(self) -> list[forward.PixelGroup]:
        """Pixels grouped by gamma (:func:`mdslam.slam.forward.pixel_groups`), cached."""
        cache = getattr(self, "_cache", None)
        if cache is None:
            self._cache = cache = {}
        if "groups" not in cache:
            cache["groups"] = forward.pixel_groups(self.gamma_, self.dual_coef_, self.intercept_)
        return cache["groups"]

    def _model_scaled(self, Th: np.ndarray, jacobian: bool = False):
        """Standardised model flux (m, n_pix) and optionally d/dtheta_scaled (m, n_pix, L)."""
        return forward.model_flux(Th, self.X_train_, self._groups(), self.n_features_in_, jacobian)

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

        Parameters
        ----------
        labels : (m, n_label) or (n_label,) array, physical units.

        Returns
        -------
        (m, n_pix, n_label) array, flux per physical label unit.
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
        return self._infer(X, ivar)["labels"]

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
        reduced chi2), ``e_<label>_cv`` (empirical ``a * SNR**b``, NaN without
        an error law), ``chi2``, ``rchi2``, ``n_good_pixels``, ``n_iter``,
        ``converged``, ``flag`` (bits: :class:`mdslam.flags.LabelFlag`).

        With ``prior`` set, the headline ``<label>`` is the posterior mean and
        ``e_<label>`` its standard deviation (times ``posterior_std_scale_``
        when ``chi2_scale="cv"``, the scale it was calibrated for);
        the maximum-likelihood labels move to ``<label>_ml`` and
        ``e_<label>_ml`` (formal), and ``<label>_map`` (posterior maximum) and
        ``posterior_n_eff`` (importance-sampling nodes carrying the weight) are
        added.  ``meta['HEADLINE']`` says which estimate the headline is.
        """
        if hasattr(X, "flux") and hasattr(X, "ivar") and hasattr(X, "meta"):      # a Spectra container
            X, ivar, ids, snr = self._from_spectra(X, ivar, ids, snr)
        res = self._infer(X, ivar, snr=snr)
        n_spec = res["labels"].shape[0]
        t = Table()
        t["id"] = np.arange(n_spec) if ids is None else np.asarray(ids)
        t["snr"] = res["snr"]
        law = self.error_law_
        post = res["posterior"]
        for li, (name, unit) in enumerate(zip(self.label_names_, self.label_units_, strict=True)):
            t[name] = res["labels"][:, li]
            t[name].unit = unit or None
            if post is None:
                t[f"e_{name}"] = res["e_formal"][:, li]
                t[f"e_{name}"].description = "formal: sqrt(diag((J^T W J)^-1)), not scaled by rchi2"
            else:
                t[name].description = "posterior mean (Li 2021 eq. 2)"
                t[f"e_{name}"] = post["std"][:, li]
                t[f"e_{name}"].description = "posterior standard deviation, CV-calibrated"
                t[f"{name}_map"] = post["map"][:, li]
                t[f"{name}_map"].unit = unit or None
                t[f"{name}_map"].description = "posterior maximum (Li 2021 eq. 2)"
                t[f"{name}_ml"] = res["ml"][:, li]
                t[f"{name}_ml"].unit = unit or None
                t[f"{name}_ml"].description = "maximum likelihood (Li 2021 eq. 3)"
                t[f"e_{name}_ml"] = res["e_formal"][:, li]
                t[f"e_{name}_ml"].unit = unit or None
                t[f"e_{name}_ml"].description = "formal: sqrt(diag((J^T W J)^-1)), not scaled by rchi2"
            t[f"e_{name}"].unit = unit or None
            t[f"e_{name}_cv"] = errorlaw.error_law_sigma(law, res["snr"], li)
            t[f"e_{name}_cv"].unit = unit or None
            t[f"e_{name}_cv"].description = "empirical: a * SNR**b fitted to CV scatter (Qiu eqs. 6-8)"
        t["chi2"] = res["chi2"]
        t["rchi2"] = _rchi2(res["chi2"], res["n_good"], len(self.label_names_))
        t["n_good_pixels"] = res["n_good"]
        t["n_iter"] = res["n_iter"]
        t["converged"] = res["converged"]
        t["flag"] = res["flag"].astype(np.int32)
        t["flag"].description = "; ".join(f"{int(b)}: {s}" for b, s in LABEL_FLAG_MEANING.items())
        t.meta["LABELS"] = ",".join(self.label_names_)
        if post is None:
            t.meta["HEADLINE"] = "maximum likelihood (Li 2021 eq. 3)"
        else:
            t["posterior_n_eff"] = res["n_eff"]
            kind = self.prior if isinstance(self.prior, str) else type(self.prior).__name__
            t.meta["HEADLINE"] = f"posterior mean (Li 2021 eq. 2), prior {kind}"
            t.meta["CHI2SCL"] = self._likelihood_scale()
        return t

    def _from_spectra(self, sp, ivar, ids, snr):
        """Arrays from a :class:`mdslam.spectra.Spectra`, checking its grid against the model's."""
        self._check_fitted()
        wave = np.asarray(sp.wavelength, float)
        if wave.ndim != 1 or wave.shape != self.wavelength_.shape or not np.allclose(
                wave, self.wavelength_, rtol=1e-9, atol=0):
            raise ValueError("spectra are not on the model wavelength grid "
                             f"({wave.shape} vs {self.wavelength_.shape}); use mdslam.preprocess first")
        iv = np.asarray(sp.ivar, float) if ivar is None else ivar
        iv = np.where(np.asarray(sp.mask, bool), 0.0, iv)
        meta = sp.meta
        if ids is None and "id" in meta.colnames:
            ids = np.asarray(meta["id"])
        if snr is None and "snr" in meta.colnames:
            snr = np.asarray(meta["snr"], float)
        return np.asarray(sp.flux, float), iv, ids, snr

    def _coerce_spectra(self, X, ivar):
        """-> flux (n, n_pix), ivar (n, n_pix) or None, bad_input (n,) bool.

        A 2-D array with the wrong number of pixels is an error; in a list of
        1-D spectra, the ones of the wrong length are only flagged.
        """
        n_pix = self.n_features_in_
        if not isinstance(X, (list, tuple)):
            flux = np.array(X, dtype=float, ndmin=2)
            if flux.ndim != 2:
                raise ValueError(f"spectra must be (n_spec, n_pix), got shape {flux.shape}")
            if flux.shape[1] != n_pix:
                raise ValueError(f"spectra have {flux.shape[1]} pixels but the model grid has {n_pix}; "
                                 "resample onto the model wavelength grid first")
            iv = None
            if ivar is not None:
                iv = np.array(ivar, dtype=float, ndmin=2)
                if iv.shape != flux.shape:
                    raise ValueError(f"ivar shape {iv.shape} != flux shape {flux.shape}")
            return flux, iv, np.zeros(flux.shape[0], bool)
        # ragged sequence: check each spectrum, flag the wrong ones
        seq = list(X)
        n = len(seq)
        flux = np.full((n, n_pix), np.nan)
        iv = None if ivar is None else np.zeros((n, n_pix))
        bad = np.zeros(n, bool)
        for i, f in enumerate(seq):
            try:
                f = np.asarray(f, float).ravel()
                w = None if ivar is None else np.asarray(ivar[i], float).ravel()
            except (TypeError, ValueError):
                bad[i] = True
                continue
            if f.size != n_pix or (w is not None and w.size != n_pix):
                bad[i] = True
                continue
            flux[i] = f
            if iv is not None:
                iv[i] = w
        return flux, iv, bad

    def _weights(self, flux, ivar):
        """Per-pixel likelihood weights 1/(sigma_obs^2 + CV-MSE_j) (0 = masked), flux units."""
        model_var = self.cv_mse_
        ok = np.isfinite(flux) & np.isfinite(model_var)[None, :] & self.pixel_usable_[None, :]
        if ivar is None:
            var = np.broadcast_to(model_var, flux.shape)
        else:
            ok &= ~np.isnan(ivar) & (ivar > 0)              # ivar = inf: no observational noise
            with np.errstate(divide="ignore", invalid="ignore"):
                var = 1.0 / np.where(ok, ivar, 1.0) + model_var
        with np.errstate(divide="ignore"):
            w = np.where(ok & (var > 0), 1.0 / np.where(var > 0, var, 1.0), 0.0)
        return w

    def _quick_grid(self):
        """(grid labels scaled (m, L), model flux (m, n_pix) physical) for the quick start."""
        cache = self._cache if hasattr(self, "_cache") else {}
        if "quick" not in cache:
            pts = [self.X_train_]
            if self.quick_grid:
                k = int(self.quick_grid)
                lo, hi = self.X_train_.min(axis=0), self.X_train_.max(axis=0)
                axes = [np.linspace(a, b, k) for a, b in zip(lo, hi, strict=True)]
                mesh = np.meshgrid(*axes, indexing="ij")
                pts.append(np.column_stack([m.ravel() for m in mesh]))
            G = np.vstack(pts)
            F, _ = self._model_scaled(G)
            cache["quick"] = (G, self.flux_mean_ + F * self.flux_scale_)
            self._cache = cache
        return cache["quick"]

    def _infer(self, X, ivar, snr=None) -> dict:
        self._check_fitted()
        flux, iv, bad = self._coerce_spectra(X, ivar)
        n, n_pix = flux.shape
        L = self.label_mean_.size
        w = self._weights(flux, iv)
        w[bad] = 0.0
        fobs = np.where(w > 0, flux, 0.0)
        n_good = (w > 0).sum(axis=1)
        if snr is None:
            snr = self._snr(flux, w > 0, iv)
        snr = np.asarray(snr, float).ravel()
        if snr.size != n:
            raise ValueError(f"snr has {snr.size} entries for {n} spectra")

        labels = np.full((n, L), np.nan)
        e_formal = np.full((n, L), np.nan)
        chi2 = np.full(n, np.nan)
        n_iter = np.zeros(n, int)
        converged = np.zeros(n, bool)
        fittable = (~bad) & (n_good > L)
        flag = self._input_flags(fittable, n_good, snr)

        idx_all = np.flatnonzero(fittable)
        nw = _n_workers(self.n_jobs)
        bs = max(1, min(int(self.batch_size), -(-idx_all.size // nw)))
        batches = [idx_all[i:i + bs] for i in range(0, idx_all.size, bs)]

        has_prior = self.prior is not None
        s_lik = self._likelihood_scale() if has_prior else 1.0
        post = {k: np.full((n, L), np.nan) for k in ("map", "mean", "std")}
        n_eff = np.full(n, np.nan)
        # the CV calibration of the std holds for the CV-chosen scale only
        std_scale = (posterior.std_factor(self.posterior_std_scale_, self.posterior_std_snr_ref_, snr)
                     if self.chi2_scale == "cv" and has_prior else np.ones((n, L)))

        def run(bidx):
            try:
                out = self._lm_batch(fobs[bidx], w[bidx])
            except Exception as exc:  # never lose a whole batch: redo one by one
                warnings.warn(f"batch fit failed ({exc!r}); refitting spectra one by one", stacklevel=2)
                out = self._lm_one_by_one(fobs[bidx], w[bidx])
            if not has_prior:
                return out, None
            return out, self._posterior_batch(fobs[bidx], w[bidx], out[0], s_lik)

        with threadpool_limits(limits=1, user_api="blas"):
            self._quick_grid()                            # build the shared cache before threads start
            if has_prior:
                self._prior()
            with ThreadPoolExecutor(max_workers=max(1, min(nw, len(batches)))) as ex:
                results = ex.map(run, batches)
                for bidx, out in zip(batches, _progress(results, self.verbose, "SLAM labels", unit="batch",
                                                        total=len(batches)), strict=True):
                    (th, cov, c2, nit, conv, failed), pst = out
                    if pst is not None:
                        th_map, mu, C, n_eff[bidx] = pst
                        post["map"][bidx] = self._physical(th_map, C)[0]
                        post["mean"][bidx], sd = self._physical(mu, C)
                        post["std"][bidx] = sd * std_scale[bidx]
                        for v in post.values():
                            v[bidx[failed]] = np.nan
                    labels[bidx], e_formal[bidx] = self._physical(th, cov)
                    chi2[bidx] = c2
                    n_iter[bidx] = nit
                    converged[bidx] = conv
                    flag[bidx[~conv]] |= LabelFlag.NOT_CONVERGED
                    flag[bidx[failed]] |= LabelFlag.FAILED
                    labels[bidx[failed]] = np.nan
        headline = post["mean"] if has_prior else labels
        flag |= self._domain_flags(headline)
        flag |= self._fit_quality_flags(chi2, n_good, labels, flux)    # mdslam.checks
        return dict(labels=headline, ml=labels, e_formal=e_formal, chi2=chi2, n_good=n_good, n_iter=n_iter,
                    converged=converged, flag=flag, snr=snr, posterior=post if has_prior else None,
                    n_eff=n_eff)

    def _input_flags(self, fittable, n_good, snr) -> np.ndarray:
        """FAILED (not fittable), FEW_PIXELS and LOW_SNR bits per spectrum, (n,) int64."""
        flag = np.zeros(fittable.size, np.int64)
        flag[~fittable] |= LabelFlag.FAILED
        flag[n_good < self.min_good_fraction * int(self.pixel_usable_.sum())] |= LabelFlag.FEW_PIXELS
        flag[np.isfinite(snr) & (snr < self.low_snr)] |= LabelFlag.LOW_SNR
        return flag

    def _domain_flags(self, labels) -> np.ndarray:
        """OUTSIDE_DOMAIN bits (one per label) of (n, L) physical labels, (n,) int64."""
        dom = self.domain_array()
        flag = np.zeros(labels.shape[0], np.int64)
        with np.errstate(invalid="ignore"):
            for li in range(labels.shape[1]):
                out_l = (labels[:, li] < dom[li, 0]) | (labels[:, li] > dom[li, 1])
                flag[out_l] |= LabelFlag.OUTSIDE_DOMAIN << li
        return flag

    def _physical(self, theta, cov):
        """Standardised labels (m, L) and covariances (m, L, L) -> physical labels and standard deviations."""
        with np.errstate(invalid="ignore"):
            return (self.label_mean_ + theta * self.label_scale_,
                    np.sqrt(np.diagonal(cov, axis1=1, axis2=2)) * self.label_scale_)

    # ------------------------------------------------------------------ posterior (Li 2021 eq. 2)
    def _prior(self) -> posterior.Prior:
        """The prior in standardised label units (cached)."""
        cache = self.__dict__.setdefault("_cache", {})
        if "prior" not in cache:
            cache["prior"] = posterior.make_prior(self.prior, self.X_train_, self.label_mean_, self.label_scale_)
        return cache["prior"]

    def _likelihood_scale(self) -> float:
        """``s`` of the likelihood ``exp(-chi2 / 2s)``: ``chi2_scale`` or the CV choice of :meth:`fit`."""
        if self.chi2_scale != "cv":
            return float(self.chi2_scale)
        if getattr(self, "chi2_scale_cv_", None) is None:
            raise ValueError("chi2_scale='cv' but this model chose no chi2 scale (it was fitted without a "
                             "prior): refit with the prior set, or give chi2_scale a number")
        return float(self.chi2_scale_)

    def _posterior_batch(self, fobs, w, theta_ml, chi2_scale):
        """MAP, posterior mean and covariance of a batch (standardised labels).

        Parameters
        ----------
        fobs, w : (m, n_pix) observed flux (0 where masked) and likelihood weights.
        theta_ml : (m, L) maximum-likelihood labels (start of the MAP search).
        chi2_scale : float

        Returns
        -------
        theta_map (m, L), mean (m, L), cov (m, L, L), n_eff (m,).  The mean is the
        importance-sampling estimate of :func:`mdslam.slam.posterior.posterior_moments`;
        the covariance is the Laplace one where fewer than
        :data:`mdslam.slam.posterior.MIN_N_EFF` nodes carry the weight.
        """
        prior = self._prior()
        scale, mean = self.flux_scale_, self.flux_mean_

        def model(th):
            F, J = self._model_scaled(th, jacobian=True)
            return mean + F * scale, J * scale[None, :, None]

        def flux(th):
            return mean + self._model_scaled(th)[0] * scale

        start = np.where(np.isfinite(theta_ml), theta_ml, 0.0)
        start = np.clip(start, prior.lo, prior.hi)
        r = posterior.map_estimate(model, fobs, w, start, prior, chi2_scale, max_iter=self.lm_max_iter,
                                   xtol=self.lm_xtol, ftol=self.lm_ftol)
        mu, C, ne = posterior.posterior_moments(flux, fobs, w, r.theta, r.cov, prior, chi2_scale)
        lap = ~(ne >= posterior.MIN_N_EFF)
        C[lap] = r.cov[lap]
        bad = ~np.all(np.isfinite(mu), axis=1)
        mu[bad] = r.theta[bad]
        return r.theta, mu, C, ne

    def _lm_one_by_one(self, fobs, w):
        m, L = fobs.shape[0], self.label_mean_.size
        th = np.full((m, L), np.nan)
        cov = np.full((m, L, L), np.nan)
        c2 = np.full(m, np.nan)
        nit = np.zeros(m, int)
        conv = np.zeros(m, bool)
        failed = np.ones(m, bool)
        for i in range(m):
            try:
                o = self._lm_batch(fobs[i:i + 1], w[i:i + 1])
            except Exception:  # noqa: BLE001 - a failed spectrum is flagged, not raised
                continue
            th[i], cov[i], c2[i], nit[i], conv[i], failed[i] = (o[0][0], o[1][0], o[2][0], o[3][0],
                                                                o[4][0], o[5][0])
        return th, cov, c2, nit, conv, failed

    def _lm_batch(self, fobs, w):
        """Batched Levenberg-Marquardt (:mod:`mdslam.slam.lm`) in standardised label space.

        Parameters
        ----------
        fobs, w : (m, n_pix) observed flux (0 where masked) and weights.

        Returns
        -------
        theta (m, L) scaled, cov (m, L, L) scaled, chi2 (m,), n_iter (m,),
        converged (m,), failed (m,).
        """
        scale = self.flux_scale_
        mean = self.flux_mean_
        G, FG = self._quick_grid()
        theta0 = lm.grid_start(fobs, w, G, FG)

        def model(th):
            F, J = self._model_scaled(th, jacobian=True)
            return mean + F * scale, J * scale[None, :, None]

        return tuple(lm.levenberg_marquardt(model, fobs, w, theta0, max_iter=self.lm_max_iter,
                                            xtol=self.lm_xtol, ftol=self.lm_ftol))

    def domain_array(self) -> np.ndarray:
        """(n_label, 2) label domain (physical units) used for the outside-domain flags."""
        self._check_fitted()
        dom = np.array(self.training_domain_, float, copy=True)
        if self.domain is None:
            return dom
        if isinstance(self.domain, dict):
            for li, name in enumerate(self.label_names_):
                if name in self.domain:
                    dom[li] = np.asarray(self.domain[name], float)
            return dom
        user = np.asarray(self.domain, float)
        if user.shape != dom.shape:
            raise ValueError(f"domain must be ({dom.shape[0]}, 2), got {user.shape}")
        return user

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
            part.  True: rerun the full grid search inside every fold (k times
            the cost of ``fit``; no hyperparameter information leaks).

        Returns
        -------
        Table as :meth:`predict_table` plus ``<label>_true`` columns, rows in
        input order.
        """
        self._check_fitted()
        flux, labels, good = self._check_training(X, y, ivar)
        ivar_arr = None if ivar is None else np.asarray(ivar, float)
        n = flux.shape[0]
        if snr is None and ivar_arr is None:
            snr = np.full(n, np.nan)
        folds = _iter_folds(n, self.cv, self.random_state)
        parts = []
        for tr, te in _progress(folds, self.verbose, "CV folds", unit="fold"):
            if nested:
                sub = clone(self).set_params(verbose=False)
                sub.fit(np.where(good[tr], flux[tr], np.nan), labels[tr],
                        None if ivar_arr is None else ivar_arr[tr], wavelength=self.wavelength_, label_names=self.label_names_,
                        label_units=self.label_units_)
                sub.error_law_ = self.error_law_
            else:
                sub = self._refit_fixed(flux[tr], labels[tr], good[tr])
            Xte = np.where(good[te], flux[te], np.nan)
            t = sub.predict_table(Xte, None if ivar_arr is None else ivar_arr[te],
                                  snr=None if snr is None else np.asarray(snr, float)[te],
                                  ids=te)
            parts.append(t)
        from astropy.table import vstack
        out = vstack(parts)
        out.sort("id")
        if ids is not None:
            out["id"] = np.asarray(ids)
        for li, name in enumerate(self.label_names_):
            out[f"{name}_true"] = labels[:, li]
        return out

    def _refit_fixed(self, flux, labels, good) -> SLAM:
        """A copy of this model refitted on new data with the per-pixel hyperparameters fixed."""
        sub = clone(self).set_params(verbose=False)
        Xs, Ys, scalers = _standardise(flux, labels, good)
        sub.label_mean_, sub.label_scale_, sub.flux_mean_, sub.flux_scale_ = scalers
        for attr in ("label_names_", "label_units_", "wavelength_", "C_", "epsilon_", "gamma_",
                     "param_grid_", "cv_mse_grid_", "error_law_", "solver_info_", "grid_edge_fraction_",
                     "chi2_scale_", "chi2_scale_cv_", "posterior_std_scale_", "posterior_std_snr_ref_"):
            if not hasattr(self, attr):      # the likelihood scale is set at the end of fit
                continue
            setattr(sub, attr, getattr(self, attr))
        sub.pixel_usable_ = self.pixel_usable_ & (good.sum(axis=0) > 1)
        sub.cv_mse_scaled_ = self.cv_mse_scaled_
        sub.cv_md_scaled_ = self.cv_md_scaled_
        sub.cv_mse_ = self.cv_mse_scaled_ * sub.flux_scale_**2
        sub.cv_md_ = self.cv_md_scaled_ * sub.flux_scale_
        sub.X_train_ = Xs
        with threadpool_limits(limits=1, user_api="blas"):
            sub.dual_coef_, sub.intercept_, _ = _refit_all(Xs, Ys, good, self.C_, self.epsilon_, self.gamma_,
                                                           sub.pixel_usable_, self.tol, self.refit_tol, False,
                                                           _n_workers(self.n_jobs))
        sub.training_domain_ = self.training_domain_
        sub.n_train_ = flux.shape[0]
        sub.n_features_in_ = self.n_features_in_
        sub._reset_cache()
        return sub

    def fit_error_law(self, snr, y_true, y_pred, *, n_bins: int = 6, min_per_bin: int = 20) -> Table:
        """Fit the empirical uncertainty law ``sigma = a * SNR**b`` per label (Qiu 2025 eqs. 6-8).

        CV scatter in equal-count SNR bins (:func:`mdslam.validation.binned_bias_scatter`)
        is fitted with :func:`mdslam.validation.fit_power_law`.  The law is stored in
        ``error_law_`` and used by :meth:`predict_table` for ``e_<label>_cv``.

        Parameters
        ----------
        snr : (n,) array
        y_true, y_pred : (n, n_label) arrays, physical units (e.g. from :meth:`cv_predict`).
        n_bins, min_per_bin : binning (Qiu: at least ~20 stars per bin).

        Returns
        -------
        The binned table (``snr_lo``, ``snr_hi``, ``snr_median``, ``n``,
        ``bias``, ``scatter``), with the fitted ``a``, ``b`` in ``meta``.
        """
        self._check_fitted()
        self.error_law_, tab = errorlaw.fit_error_law(snr, y_true, y_pred, self.label_names_,
                                                      n_bins=n_bins, min_per_bin=min_per_bin)
        return tab

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the fitted model to ``path`` (.npz; format in :mod:`mdslam.modelfile`)."""
        self._check_fitted()
        state = {k: v for k, v in self.__dict__.items() if k.endswith("_") and not k.startswith("_")}
        modelfile.save_model(path, state, _jsonable_params(self.get_params()))

    @classmethod
    def load(cls, path) -> SLAM:
        """Read a model written by :meth:`save` (no pickle; format checked)."""
        params, state = modelfile.load_model(path)
        params.pop("cv_repr", None)
        if isinstance(params.get("domain"), list):
            params["domain"] = np.asarray(params["domain"], float)
        if isinstance(params.get("prior"), list):
            params["prior"] = np.asarray(params["prior"], float)
        for key in ("C", "epsilon", "gamma"):
            params[key] = tuple(params[key])
        valid = cls().get_params()
        model = cls(**{k: v for k, v in params.items() if k in valid})
        model.__dict__.update(state)
        model.n_features_in_ = int(model.dual_coef_.shape[0])
        model.cv_mse_ = model.cv_mse_scaled_ * model.flux_scale_**2
        model.cv_md_ = model.cv_md_scaled_ * model.flux_scale_
        model.grid_edge_fraction_ = _grid_edge_fraction(model)
        model._reset_cache()
        return model


def _rchi2(chi2, n_good, n_label) -> np.ndarray:
    """Reduced chi2 ``chi2 / max(n_good - n_label, 1)``, shape (n,)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(chi2, float) / np.maximum(np.asarray(n_good) - n_label, 1)


def _jsonable_params(params: dict) -> dict:
    """``get_params()`` as JSON types; a CV splitter is stored as its number of folds."""
    out = {}
    for k, v in params.items():
        if k == "prior" and callable(v):
            raise ValueError("a model with a callable prior cannot be saved (the file holds no code): "
                             "set_params(prior=...) to 'flat', 'training' or label samples first")
        if k == "cv" and not isinstance(v, (int, np.integer)):
            nf = _n_folds(v)
            out[k] = nf if nf is not None else 10
            out["cv_repr"] = repr(v)
        elif isinstance(v, np.ndarray):
            out[k] = v.tolist()
        elif isinstance(v, (tuple, list)):
            out[k] = [float(x) if isinstance(x, (np.floating, float)) else x for x in v]
        elif isinstance(v, dict):
            out[k] = {kk: list(map(float, vv)) for kk, vv in v.items()}
        elif isinstance(v, (np.integer,)):
            out[k] = int(v)
        elif isinstance(v, (np.floating,)):
            out[k] = float(v)
        else:
            out[k] = v
    return out
