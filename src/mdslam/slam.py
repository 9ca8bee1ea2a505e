"""SLAM, the Stellar LAbel Machine (Zhang et al. 2020; Li et al. 2021 sec. 2; Qiu et al. 2025 sec. 3).

A data-driven spectral model: at every wavelength pixel ``j`` the (normalised,
standardised) flux is a support vector regression on the (standardised)
stellar labels, ``f_j(theta) = sum_i beta_ij k_j(theta_i, theta) + b_j`` with an
RBF kernel of width ``gamma_j``.  Each pixel's ``(C, epsilon, gamma)`` is
chosen from a grid by k-fold cross-validated mean squared error (CV-MSE, Li
eq. 1 / Qiu eq. 1; the CV mean deviation, Qiu eq. 2, is kept too).  Labels of
a new spectrum maximise the likelihood of Li eq. 3 with
``sigma_j^2 = sigma_obs,j^2 + CV-MSE_j``, by Levenberg-Marquardt from the best
point of a precomputed label grid.

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

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from astropy.table import Table
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from . import validation
from .flags import LABEL_FLAG_MEANING, LabelFlag, label_flag_meanings
from .svr import KernelEig, SVRBatchSolution, rbf_kernel, solve_svr_exact, solve_svr_staged

__all__ = [
    "SLAM",
    "QIU2025_USABLE_RANGE",
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


def _iter_folds(n: int, cv, random_state) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs: int -> shuffled KFold(seed), splitter, or explicit pairs."""
    if isinstance(cv, (int, np.integer)):
        if cv < 2 or cv > n:
            raise ValueError(f"cv={cv}: need 2 <= k <= n_train={n}")
        splitter = KFold(n_splits=int(cv), shuffle=True, random_state=random_state)
        return [(np.asarray(a), np.asarray(b)) for a, b in splitter.split(np.zeros((n, 1)))]
    if hasattr(cv, "split"):
        return [(np.asarray(a), np.asarray(b)) for a, b in cv.split(np.zeros((n, 1)))]
    return [(np.asarray(a), np.asarray(b)) for a, b in cv]


def _n_folds(cv) -> int | None:
    if isinstance(cv, (int, np.integer)):
        return int(cv)
    if hasattr(cv, "get_n_splits"):
        try:
            return int(cv.get_n_splits())
        except TypeError:
            return None
    return None


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
        prediction).  None: all CPUs available to the process.  BLAS runs
        single-threaded inside (multi-threaded BLAS on shared, busy cores is
        many times slower).
    verbose : bool
        Progress bars (tqdm).

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
    training_domain_ : (n_label, 2) array
        Min and max of the training labels (physical units).
    pixel_usable_ : (n_pix,) bool array
    error_law_ : dict or None
        ``a``, ``b`` (n_label,) of ``sigma = a * SNR**b``, set by :meth:`fit_error_law`.
    solver_info_ : dict
        Mean ADMM iterations, largest KKT gaps of the CV and final fits.
    """

    def __init__(self, C: Sequence[float] = DEFAULT_C, epsilon: Sequence[float] = DEFAULT_EPSILON,
                 gamma: Sequence[float] = DEFAULT_GAMMA, cv=10, random_state: int | None = 0,
                 tol: float = 1e-3, refit_tol: float = 1e-6, domain=None, low_snr: float = 10.0,
                 min_good_fraction: float = 0.5, lm_max_iter: int = 100, lm_xtol: float = 1e-7,
                 lm_ftol: float = 1e-10, quick_grid: int | None = None, batch_size: int = 256,
                 n_jobs: int | None = None, verbose: bool = False):
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

    # ------------------------------------------------------------------ training
    def fit(self, X: np.ndarray, y: np.ndarray, ivar: np.ndarray | None = None, *,
            wavelength: np.ndarray | None = None, label_names: Sequence[str] | None = None,
            label_units: Sequence[str] | None = None) -> SLAM:
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

        Returns
        -------
        self
        """
        with threadpool_limits(limits=1, user_api="blas"):
            return self._fit(X, y, ivar, wavelength, label_names, label_units)

    def _fit(self, X, y, ivar, wavelength, label_names, label_units) -> SLAM:
        flux, labels, good = self._check_training(X, y, ivar)
        n, n_pix = flux.shape
        L = labels.shape[1]
        self.label_names_ = list(label_names) if label_names is not None else [f"label{k}" for k in range(L)]
        self.label_units_ = list(label_units) if label_units is not None else [""] * L
        if len(self.label_names_) != L or len(self.label_units_) != L:
            raise ValueError(f"label_names/label_units must have {L} entries")
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
        nw = _n_workers(self.n_jobs)
        sse, se, cnt, info = _grid_search_cv(Xs, Ys, good, folds, Cs, es, gs, self.tol, self.verbose, nw)
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
            self.verbose, nw)
        self.training_domain_ = np.column_stack([labels.min(axis=0), labels.max(axis=0)])
        self.n_train_ = n
        self.n_features_in_ = n_pix
        self.error_law_ = None
        self.solver_info_ = {**info, **refit_info, "n_folds": len(folds)}
        self._reset_cache()
        return self

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

    def _groups(self):
        """Pixels grouped by gamma: list of (gamma, pixel_index, dual_T (n_train, n_g), b (n_g,))."""
        cache = getattr(self, "_cache", None)
        if cache is None:
            self._cache = cache = {}
        if "groups" not in cache:
            groups = []
            for g in np.unique(self.gamma_):
                pix = np.flatnonzero(self.gamma_ == g)
                groups.append((float(g), pix, np.ascontiguousarray(self.dual_coef_[pix].T),
                               self.intercept_[pix]))
            cache["groups"] = groups
        return cache["groups"]

    def _model_scaled(self, Th: np.ndarray, jacobian: bool = False):
        """Standardised model flux (m, n_pix) and optionally d/dtheta_scaled (m, n_pix, L)."""
        m = Th.shape[0]
        n_pix = self.n_features_in_
        L = Th.shape[1]
        F = np.empty((m, n_pix))
        J = np.empty((m, n_pix, L)) if jacobian else None
        Xt = self.X_train_
        for g, pix, BT, b in self._groups():
            k = rbf_kernel(Th, Xt, g)                    # (m, n_train)
            if not jacobian:
                F[:, pix] = k @ BT + b
                continue
            # d k(theta, x_i) / d theta_l = -2 gamma (theta_l - x_il) k: one stacked product
            stack = np.concatenate([k[None], k[None] * Xt.T[:, None, :]], axis=0)   # (1+L, m, n_train)
            prod = (stack.reshape(-1, Xt.shape[0]) @ BT).reshape(1 + L, m, -1)
            kb = prod[0]
            F[:, pix] = kb + b
            for li in range(L):
                J[:, pix, li] = -2.0 * g * (Th[:, li, None] * kb - prod[1 + li])
        return F, J

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

    def _check_fitted(self):
        if not hasattr(self, "dual_coef_"):
            raise AttributeError("this SLAM model is not fitted yet: call fit() or SLAM.load()")

    # ------------------------------------------------------------------ inference
    def predict(self, X, ivar=None) -> np.ndarray:
        """Labels of spectra, physical units (maximum likelihood, Li 2021 eq. 3).

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
        """
        if hasattr(X, "flux") and hasattr(X, "ivar") and hasattr(X, "meta"):      # a Spectra container
            X, ivar, ids, snr = self._from_spectra(X, ivar, ids, snr)
        res = self._infer(X, ivar, snr=snr)
        n_spec = res["labels"].shape[0]
        t = Table()
        t["id"] = np.arange(n_spec) if ids is None else np.asarray(ids)
        t["snr"] = res["snr"]
        law = self.error_law_
        for li, (name, unit) in enumerate(zip(self.label_names_, self.label_units_, strict=True)):
            t[name] = res["labels"][:, li]
            t[name].unit = unit or None
            t[f"e_{name}"] = res["e_formal"][:, li]
            t[f"e_{name}"].unit = unit or None
            t[f"e_{name}"].description = "formal: sqrt(diag((J^T W J)^-1)), not scaled by rchi2"
            if law is not None:
                with np.errstate(invalid="ignore", divide="ignore"):
                    e_cv = law["a"][li] * np.asarray(res["snr"], float) ** law["b"][li]
            else:
                e_cv = np.full(n_spec, np.nan)
            t[f"e_{name}_cv"] = e_cv
            t[f"e_{name}_cv"].unit = unit or None
            t[f"e_{name}_cv"].description = "empirical: a * SNR**b fitted to CV scatter (Qiu eqs. 6-8)"
        t["chi2"] = res["chi2"]
        with np.errstate(invalid="ignore", divide="ignore"):
            t["rchi2"] = res["chi2"] / np.maximum(res["n_good"] - len(self.label_names_), 1)
        t["n_good_pixels"] = res["n_good"]
        t["n_iter"] = res["n_iter"]
        t["converged"] = res["converged"]
        t["flag"] = res["flag"].astype(np.int32)
        t["flag"].description = "; ".join(f"{int(b)}: {s}" for b, s in LABEL_FLAG_MEANING.items())
        t.meta["LABELS"] = ",".join(self.label_names_)
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
            if iv is None:
                snr = np.full(n, np.nan)
            else:
                with np.errstate(invalid="ignore"):
                    s = np.where((w > 0) & (iv > 0), np.abs(flux) * np.sqrt(np.where(iv > 0, iv, 0)), np.nan)
                snr = np.full(n, np.nan)
                has = np.isfinite(s).any(axis=1)
                snr[has] = np.nanmedian(s[has], axis=1)
        snr = np.asarray(snr, float).ravel()
        if snr.size != n:
            raise ValueError(f"snr has {snr.size} entries for {n} spectra")

        labels = np.full((n, L), np.nan)
        e_formal = np.full((n, L), np.nan)
        chi2 = np.full(n, np.nan)
        n_iter = np.zeros(n, int)
        converged = np.zeros(n, bool)
        flag = np.zeros(n, np.int64)
        fittable = (~bad) & (n_good > L)
        flag[~fittable] |= LabelFlag.FAILED
        n_usable = int(self.pixel_usable_.sum())
        flag[n_good < self.min_good_fraction * n_usable] |= LabelFlag.FEW_PIXELS
        flag[np.isfinite(snr) & (snr < self.low_snr)] |= LabelFlag.LOW_SNR

        idx_all = np.flatnonzero(fittable)
        nw = _n_workers(self.n_jobs)
        bs = max(1, min(int(self.batch_size), -(-idx_all.size // nw)))
        batches = [idx_all[i:i + bs] for i in range(0, idx_all.size, bs)]

        def run(bidx):
            try:
                return self._lm_batch(fobs[bidx], w[bidx])
            except Exception as exc:  # never lose a whole batch: redo one by one
                warnings.warn(f"batch fit failed ({exc!r}); refitting spectra one by one", stacklevel=2)
                return self._lm_one_by_one(fobs[bidx], w[bidx])

        with threadpool_limits(limits=1, user_api="blas"):
            self._quick_grid()                            # build the shared cache before threads start
            with ThreadPoolExecutor(max_workers=max(1, min(nw, len(batches)))) as ex:
                results = ex.map(run, batches)
                for bidx, out in zip(batches, _progress(results, self.verbose, "SLAM labels", unit="batch",
                                                        total=len(batches)), strict=True):
                    th, cov, c2, nit, conv, failed = out
                    labels[bidx] = self.label_mean_ + th * self.label_scale_
                    with np.errstate(invalid="ignore"):
                        e_formal[bidx] = np.sqrt(np.diagonal(cov, axis1=1, axis2=2)) * self.label_scale_
                    chi2[bidx] = c2
                    n_iter[bidx] = nit
                    converged[bidx] = conv
                    flag[bidx[~conv]] |= LabelFlag.NOT_CONVERGED
                    flag[bidx[failed]] |= LabelFlag.FAILED
                    labels[bidx[failed]] = np.nan
        dom = self.domain_array()
        with np.errstate(invalid="ignore"):
            for li in range(L):
                out_l = (labels[:, li] < dom[li, 0]) | (labels[:, li] > dom[li, 1])
                flag[out_l] |= LabelFlag.OUTSIDE_DOMAIN << li
        return dict(labels=labels, e_formal=e_formal, chi2=chi2, n_good=n_good, n_iter=n_iter,
                    converged=converged, flag=flag, snr=snr)

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
        """Batched Levenberg-Marquardt in standardised label space.

        Parameters
        ----------
        fobs, w : (m, n_pix) observed flux (0 where masked) and weights.

        Returns
        -------
        theta (m, L) scaled, cov (m, L, L) scaled, chi2 (m,), n_iter (m,),
        converged (m,), failed (m,).
        """
        m = fobs.shape[0]
        L = self.label_mean_.size
        scale = self.flux_scale_
        mean = self.flux_mean_
        # quick start: chi2 against the grid by matrix products
        G, FG = self._quick_grid()
        chi2_grid = ((w * fobs**2).sum(axis=1)[:, None] - 2.0 * (w * fobs) @ FG.T + w @ (FG**2).T)
        theta = G[np.argmin(chi2_grid, axis=1)].copy()

        def evaluate(th, rows):
            F, J = self._model_scaled(th, jacobian=True)
            r = fobs[rows] - (mean + F * scale)              # (k, n_pix)
            Jp = J * scale[None, :, None]                    # d model / d theta_scaled
            return r, Jp

        r, Jp = evaluate(theta, slice(None))
        chi2 = (w * r * r).sum(axis=1)
        mu = np.full(m, 1e-3)
        n_iter = np.zeros(m, int)
        converged = np.zeros(m, bool)
        active = np.arange(m)
        eye = np.eye(L)
        for _ in range(int(self.lm_max_iter)):
            if active.size == 0:
                break
            Ja, wa, ra = Jp[active], w[active], r[active]
            JW = Ja * wa[:, :, None]
            A = np.matmul(JW.transpose(0, 2, 1), Ja)
            g = np.matmul(JW.transpose(0, 2, 1), ra[:, :, None])[..., 0]
            dA = np.diagonal(A, axis1=1, axis2=2)
            damp = mu[active, None] * (dA + 1e-12 * dA.sum(axis=1, keepdims=True) + 1e-300)
            step = np.linalg.solve(A + damp[:, :, None] * eye, g[..., None])[..., 0]
            th_new = theta[active] + step
            r_new, J_new = evaluate(th_new, active)
            chi2_new = (wa * r_new * r_new).sum(axis=1)
            n_iter[active] += 1
            acc = np.isfinite(chi2_new) & (chi2_new <= chi2[active])
            small_step = np.max(np.abs(step), axis=1) < self.lm_xtol
            small_df = acc & ((chi2[active] - chi2_new) <= self.lm_ftol * np.maximum(chi2[active], 1e-300))
            ia = active[acc]
            theta[ia] = th_new[acc]
            r[ia] = r_new[acc]
            Jp[ia] = J_new[acc]
            chi2[ia] = chi2_new[acc]
            mu[active] = np.where(acc, np.maximum(mu[active] * 0.3, 1e-12), mu[active] * 10.0)
            done = small_step | small_df | (mu[active] > 1e12)
            converged[active[done]] = True
            active = active[~done]
        # covariance (J^T W J)^-1 at the solution, scaled label units
        A = np.matmul((Jp * w[:, :, None]).transpose(0, 2, 1), Jp)
        cov = np.full((m, L, L), np.nan)
        okA = np.all(np.isfinite(A), axis=(1, 2))
        for i in np.flatnonzero(okA):
            try:
                cov[i] = np.linalg.inv(A[i])
            except np.linalg.LinAlgError:
                pass
        failed = ~np.all(np.isfinite(theta), axis=1) | ~np.isfinite(chi2)
        return theta, cov, chi2, n_iter, converged & ~failed, failed

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
                     "param_grid_", "cv_mse_grid_", "error_law_", "solver_info_", "grid_edge_fraction_"):
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
        L = self.label_mean_.size
        snr = np.asarray(snr, float).ravel()
        yt = np.array(y_true, float, ndmin=2).reshape(snr.size, L)
        yp = np.array(y_pred, float, ndmin=2).reshape(snr.size, L)
        ok = np.isfinite(snr) & np.all(np.isfinite(yt), axis=1) & np.all(np.isfinite(yp), axis=1)
        tab = validation.binned_bias_scatter(snr[ok], yp[ok], yt[ok], n_bins=n_bins, min_per_bin=min_per_bin)
        if len(tab) < 2:
            raise ValueError(f"only {len(tab)} SNR bin(s) with >= {min_per_bin} stars: cannot fit a power law")
        a = np.zeros(L)
        b = np.zeros(L)
        cov = np.zeros((L, 2, 2))
        scat = np.asarray(tab["scatter"]).reshape(len(tab), L)
        for li in range(L):
            a[li], b[li], cov[li] = validation.fit_power_law(np.asarray(tab["snr_median"]), scat[:, li])
        self.error_law_ = {"a": a, "b": b, "cov": cov,
                           "snr_range": (float(tab["snr_lo"].min()), float(tab["snr_hi"].max())),
                           "n_bins": len(tab)}
        tab.meta.update({"label_names": list(self.label_names_), "a": a.tolist(), "b": b.tolist()})
        return tab

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the fitted model to ``path`` (.npz; format in :mod:`mdslam.modelfile`)."""
        from .modelfile import save_model
        save_model(self, path)

    @classmethod
    def load(cls, path) -> SLAM:
        """Read a model written by :meth:`save` (no pickle; format checked)."""
        from .modelfile import load_model
        return load_model(path)


# ---------------------------------------------------------------------- helpers
def _progress(it, enabled, desc, **kw):
    if not enabled:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, desc=desc, **kw)


def _grid_edge_fraction(model) -> dict:
    """Fraction of usable pixels whose chosen value is the lowest or highest of its grid (NaN: < 3 values)."""
    out = {}
    use = model.pixel_usable_
    for k in ("C", "epsilon", "gamma"):
        g = np.asarray(model.param_grid_[k])
        v = getattr(model, k + "_")[use]
        out[k] = float(np.mean(np.isin(v, (g.min(), g.max())))) if g.size > 2 and v.size else float("nan")
    return out


def _n_workers(n_jobs) -> int:
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n_jobs is None or n_jobs == 0:
        return max(ncpu, 1)
    if n_jobs < 0:
        return max(ncpu + 1 + int(n_jobs), 1)
    return int(n_jobs)


def _solve_parallel(fn, ke, Y, C, eps, n_workers, **kw) -> SVRBatchSolution:
    """Run a batched SVR solver on pixel blocks in threads (BLAS single-threaded inside)."""
    P = Y.shape[0]
    nw = max(1, min(int(n_workers), P // 8 or 1))
    if nw == 1:
        return fn(ke, Y, C, eps, **kw)
    n_chunks = min(2 * nw, max(P // 64, nw))          # a few more chunks than threads: load balance
    edges = np.linspace(0, P, n_chunks + 1).astype(int)

    def rows(a, lo, hi):
        return a[lo:hi] if np.ndim(a) >= 1 and np.shape(a)[0] == P else a

    def part(k):
        lo, hi = edges[k], edges[k + 1]
        return fn(ke, Y[lo:hi], rows(C, lo, hi), rows(eps, lo, hi), **kw)

    with ThreadPoolExecutor(max_workers=nw) as ex:
        parts = list(ex.map(part, range(n_chunks)))
    cat = np.concatenate
    return SVRBatchSolution(beta=cat([p.beta for p in parts]), intercept=cat([p.intercept for p in parts]),
                            gap=cat([p.gap for p in parts]), n_iter=cat([p.n_iter for p in parts]),
                            converged=cat([p.converged for p in parts]),
                            state=tuple(cat([p.state[i] for p in parts]) for i in range(3)))


def _standardise(flux, labels, good):
    """Labels and per-pixel fluxes to mean 0, variance 1 (good pixels only; ddof=0)."""
    lm = labels.mean(axis=0)
    ls = labels.std(axis=0)
    ls = np.where(ls > 0, ls, 1.0)
    Xs = (labels - lm) / ls
    cnt = good.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        fm = np.where(cnt > 0, (flux * good).sum(axis=0) / np.maximum(cnt, 1), 0.0)
        fv = np.where(cnt > 0, (((flux - fm) * good) ** 2).sum(axis=0) / np.maximum(cnt, 1), 1.0)
    fs = np.sqrt(fv)
    fs = np.where(fs > 1e-300, fs, 1.0)
    Ys = np.where(good, (flux - fm) / fs, 0.0)
    return Xs, Ys, (lm, ls, fm, fs)


def _grid_search_cv(Xs, Ys, good, folds, Cs, es, gs, tol, verbose, n_workers=1):
    """Accumulate per-pixel CV sums over the grid: sse, se (nC, neps, ng, n_pix), count (n_pix,)."""
    n, n_pix = Ys.shape
    sse = np.zeros((Cs.size, es.size, gs.size, n_pix))
    se = np.zeros_like(sse)
    cnt = np.zeros(n_pix)
    for _, te in folds:
        cnt += good[te].sum(axis=0)
    n_iter_tot = 0
    n_solves = 0
    max_gap = 0.0
    n_unconv = 0
    steps = [(gi, k) for gi in range(gs.size) for k in range(len(folds))]
    bar = _progress(steps, verbose, "SLAM CV grid", unit="fold",
                    postfix=f"{n_pix} px x {Cs.size * es.size} (C, eps)")
    for gi, k in bar:
        g = gs[gi]
        tr, te = folds[k]
        # eigenvalues below 1e-8 of the largest are left out of the ADMM linear step only
        # (a third fewer columns at gamma 0.3 on the reference problem, same CV-MSE to 1e-5);
        # the KKT gap and the polish always use the full kernel, so the stopping rule is exact
        ke = KernelEig.from_kernel(rbf_kernel(Xs[tr], Xs[tr], g), rel_cut=1e-8)
        Kv = rbf_kernel(Xs[tr], Xs[te], g)
        Ytr = np.ascontiguousarray(Ys[tr].T)
        gtr = good[tr].T
        Cmask = None if gtr.all() else gtr.astype(float)
        gte = good[te].T
        Yte = Ys[te].T
        for ci, C in enumerate(Cs):
            for ei, e in enumerate(es):
                sol = _solve_parallel(solve_svr_staged, ke, Ytr, C if Cmask is None else C * Cmask, e,
                                      n_workers, tol=tol)
                res = (sol.beta @ Kv + sol.intercept[:, None] - Yte) * gte
                sse[ci, ei, gi] += (res * res).sum(axis=1)
                se[ci, ei, gi] += res.sum(axis=1)
                n_iter_tot += int(sol.n_iter.sum())
                n_solves += n_pix
                max_gap = max(max_gap, float(sol.gap.max(initial=0.0)))
                n_unconv += int((~sol.converged).sum())
    info = {"cv_mean_iterations": n_iter_tot / max(n_solves, 1), "cv_max_kkt_gap": max_gap,
            "cv_n_unconverged": n_unconv}
    return sse, se, cnt, info


def _refit_all(Xs, Ys, good, C_pix, eps_pix, gamma_pix, usable, tol, refit_tol, verbose, n_workers=1):
    """Final SVR of every pixel on all training stars, exact optimum where reachable."""
    n, n_pix = Ys.shape
    dual = np.zeros((n_pix, n))
    b = np.zeros(n_pix)
    max_gap = 0.0
    n_unconv = 0
    gammas = np.unique(gamma_pix[usable])
    for g in _progress(gammas, verbose, "SLAM refit", unit="gamma"):
        pix = np.flatnonzero((gamma_pix == g) & usable)
        ke = KernelEig.from_kernel(rbf_kernel(Xs, Xs, g))
        Y = np.ascontiguousarray(Ys[:, pix].T)
        Cb = C_pix[pix, None] * good[:, pix].T
        e = eps_pix[pix]
        sol = _solve_parallel(solve_svr_exact, ke, Y, Cb, e, n_workers, tol=tol, final_tol=refit_tol)
        dual[pix] = sol.beta
        b[pix] = sol.intercept
        max_gap = max(max_gap, float(sol.gap.max(initial=0.0)))
        n_unconv += int((sol.gap > refit_tol).sum())
    # unusable pixels: model = training mean (dual 0, b 0 in scaled units)
    return dual, b, {"refit_max_kkt_gap": max_gap, "refit_n_above_tol": n_unconv}
