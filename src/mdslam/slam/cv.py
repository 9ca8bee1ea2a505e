"""Cross-validation in SLAM: per-pixel hyperparameter choice, the chi2 scale, CV labels.

* :func:`choose_hyperparameters` -- each pixel's ``(C, epsilon, gamma)`` of lowest
  k-fold CV-MSE (Li 2021 eq. 1 / Qiu 2025 eqs. 1-2), from the sums of
  :func:`mdslam.slam.training._grid_search_cv`;
* :func:`fit_likelihood_scale` -- the likelihood by CV: the correlated-pixel noise model
  (:func:`fit_noise`) and the scale ``s`` of the posterior;
* :func:`cv_predict` -- k-fold CV labels of the training set (Qiu 2025 sec. 3.3);
* :func:`refit_fixed` -- a model refitted on a fold with the hyperparameters fixed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.table import Table, vstack
from sklearn.base import clone

from . import infer, inputs, noise, posterior, quality
from ._util import _n_workers, _progress, one_blas_thread
from .training import _iter_folds, _refit_all, _standardise

#: Candidate chi2 scales ``s`` (likelihood ``exp(-chi2 / 2s)``) for ``chi2_scale="cv"``.
CHI2_SCALE_GRID = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 40.0)

#: Fitted attributes a fold's model takes over unchanged from the full model.
_SHARED_STATE = ("label_names_", "label_units_", "wavelength_", "C_", "epsilon_", "gamma_",
                 "param_grid_", "cv_mse_grid_", "error_law_", "solver_info_", "grid_edge_fraction_",
                 "chi2_scale_", "chi2_scale_cv_", "posterior_std_scale_", "posterior_std_snr_ref_",
                 "noise_factor_", "noise_diag_", "noise_rank_cv_")


def choose_hyperparameters(sse: np.ndarray, se: np.ndarray, cnt: np.ndarray, Cs: np.ndarray, es: np.ndarray,
                           gs: np.ndarray) -> dict[str, np.ndarray]:
    """Per pixel, the grid point of lowest CV-MSE.

    Parameters
    ----------
    sse, se : (n_C, n_epsilon, n_gamma, n_pix) arrays
        Sums over the CV test points of the squared and absolute errors
        (standardised flux).
    cnt : (n_pix,) array
        Test points per pixel (0: no usable training data).
    Cs, es, gs : (n_C,), (n_epsilon,), (n_gamma,) arrays
        The grid.

    Returns
    -------
    dict of fitted attributes: ``C_``, ``epsilon_``, ``gamma_``, ``cv_mse_scaled_``,
    ``cv_md_scaled_``, ``pixel_usable_`` (n_pix,) and ``cv_mse_grid_``
    (n_pix, n_C, n_epsilon, n_gamma).  Unusable pixels get the first grid point,
    CV-MSE ``inf`` and CV-MD NaN.
    """
    n_pix = cnt.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        mse = sse / cnt                                   # (nC, neps, ng, n_pix)
        md = se / cnt
    flat = mse.reshape(-1, n_pix)
    usable = cnt > 0
    best = np.zeros(n_pix, int)
    if usable.any():
        best[usable] = np.nanargmin(np.where(np.isfinite(flat[:, usable]), flat[:, usable], np.inf), axis=0)
    ic, ie, ig = np.unravel_index(best, mse.shape[:3])
    return {"C_": Cs[ic], "epsilon_": es[ie], "gamma_": gs[ig],
            "cv_mse_grid_": np.moveaxis(mse, -1, 0),              # (n_pix, nC, neps, ng), scaled
            "cv_mse_scaled_": np.where(usable, flat[best, np.arange(n_pix)], np.inf),
            "cv_md_scaled_": np.where(usable, md.reshape(-1, n_pix)[best, np.arange(n_pix)], np.nan),
            "pixel_usable_": usable}


def fit_likelihood_scale(model: Any, flux: np.ndarray, labels: np.ndarray, good: np.ndarray,
                         ivar: np.ndarray | None, folds: list) -> None:
    """Set the likelihood of a model being fitted: its noise model, ``chi2_scale_`` and ``posterior_std_scale_``.

    Every fold is predicted by the model refitted on the other folds
    (per-pixel hyperparameters fixed, :func:`refit_fixed`).  With
    ``likelihood="correlated"`` the folds' residuals at the true labels give
    the factor model of the model-error covariance (:func:`fit_noise`).  For
    ``chi2_scale="cv"`` with a prior, the posterior mean is computed at every
    candidate ``s`` of :data:`CHI2_SCALE_GRID`, and the ``s`` of lowest mean
    normalised MSE (MSE / label variance, averaged over labels) is kept; at
    that ``s``, the width of ``(mean - truth) / std`` per label and SNR bin
    gives ``posterior_std_scale_``.

    Parameters
    ----------
    model : SLAM
        The model, fitted up to its likelihood.
    flux, good : (n, n_pix) arrays
        Training fluxes (0 where not good) and their good-pixel mask.
    labels : (n, L) array, physical units.
    ivar : (n, n_pix) array or None
    folds : list of (train, test) index arrays

    Raises
    ------
    ValueError
        ``chi2_scale`` neither "cv" nor a positive number, or an unknown ``likelihood``.
    """
    L = labels.shape[1]
    model.chi2_scale_cv_ = None
    model.posterior_std_scale_ = np.column_stack([np.ones(L), np.zeros(L)])
    model.posterior_std_snr_ref_ = 1.0
    model.noise_factor_ = model.noise_diag_ = model.noise_rank_cv_ = None
    correlated = check_likelihood(model.likelihood) == "correlated"
    if model.chi2_scale != "cv":
        s = float(model.chi2_scale)
        if not s > 0:
            raise ValueError(f"chi2_scale must be 'cv' or a positive number, got {model.chi2_scale!r}")
        model.chi2_scale_ = s
    else:
        model.chi2_scale_ = 1.0
    choose_s = model.chi2_scale == "cv" and model.prior is not None
    if not (correlated or choose_s):
        return
    subs = [(refit_fixed(model, flux[tr], labels[tr], good[tr]), te)
            for tr, te in _progress(folds, model.verbose, "likelihood CV", unit="fold")]
    if correlated:
        fit_noise(model, subs, flux, labels, good, folds)
    if choose_s:
        _choose_chi2_scale(model, subs, flux, labels, good, ivar)


def check_likelihood(likelihood: Any) -> str:
    """``likelihood`` if it is ``"independent"`` or ``"correlated"``.

    Raises
    ------
    ValueError
        Any other value.
    """
    if likelihood not in ("independent", "correlated"):
        raise ValueError(f"likelihood={likelihood!r}: use 'independent' (Li 2021 eq. 3) or 'correlated'")
    return likelihood


def fit_noise(model: Any, subs: list, flux: np.ndarray, labels: np.ndarray, good: np.ndarray,
              folds: list) -> None:
    """``noise_factor_``, ``noise_diag_`` and ``noise_rank_cv_`` from the CV residuals of the folds.

    The residual of a star is its flux minus the forward model of the fold
    without it, at its true labels (:func:`cv_residuals`); their covariance
    is modelled by :func:`mdslam.slam.noise.fit_factor_model`.  Each fold's
    model gets a noise model of the same rank fitted on the residuals of its
    own training stars only (:func:`fold_noise`), so the chi2 scale and the
    posterior-std calibration that the fold models set are measured on stars
    whose residuals their covariance has not seen, as at prediction time.

    Parameters
    ----------
    model : SLAM
    subs : list of (SLAM, test indices)
        Each fold's model (:func:`refit_fixed`) and held-out stars.
    flux, good : (n, n_pix) arrays
    labels : (n, L) array, physical units.
    folds : list of (train, test)
        The same folds (for the rank choice).
    """
    R = cv_residuals(subs, flux, labels, good, model.pixel_usable_)
    seed = int(model.random_state or 0)
    V, d, info = noise.fit_factor_model(R, folds, random_state=seed)
    model.noise_factor_ = V
    model.noise_diag_ = np.where(model.pixel_usable_, d, np.inf)
    model.noise_rank_cv_ = info
    fold_noise(subs, folds, R, info["rank"], seed)


def cv_residuals(subs: list, flux: np.ndarray, labels: np.ndarray, good: np.ndarray,
                 usable: np.ndarray) -> np.ndarray:
    """Flux minus the forward model of the fold without the star, at its true labels, (n, n_pix).

    Flux units; 0 on bad pixels and on pixels not ``usable`` (n_pix,).  ``subs``
    as for :func:`fit_noise`.
    """
    R = np.zeros_like(flux)
    for sub, te in subs:
        R[te] = np.where(good[te], flux[te] - sub.predict_flux(labels[te]), 0.0)
    R[:, ~usable] = 0.0
    return R


def fold_noise(subs: list, folds: list, R: np.ndarray, rank: int, seed: int) -> None:
    """Give each fold's model the rank-``rank`` noise model of its training stars' residuals, in place.

    With the whole training set's noise model instead, a held-out star's own
    residual is inside the covariance that whitens it: its label error comes
    out too small for its posterior width.  On the XP M dwarfs' nested CV
    the posterior-std calibration measured that way left the correlated
    posterior's normalised widths at 1.2-1.4 (std over 393 stars).

    Parameters
    ----------
    subs : list of (SLAM, test indices)
    folds : list of (train, test)
        The folds of ``subs``, in the same order.
    R : (n, n_pix) array
        :func:`cv_residuals` (flux units).
    rank : int
        Factor rank (the rank chosen on all residuals).
    seed : int
        Seed of the factor analysis.
    """
    for (sub, _), (tr, _) in zip(subs, folds, strict=True):
        Vk, dk, _ = noise.fit_factor_model(R[tr], [], ranks=(rank,), random_state=seed)
        sub.noise_factor_, sub.noise_diag_ = Vk, np.where(sub.pixel_usable_, dk, np.inf)
        sub._reset_cache()


def _choose_chi2_scale(model: Any, subs: list, flux: np.ndarray, labels: np.ndarray, good: np.ndarray,
                       ivar: np.ndarray | None) -> None:
    """The CV choice of ``chi2_scale_`` and the posterior-std calibration (see :func:`fit_likelihood_scale`)."""
    grid = np.asarray(CHI2_SCALE_GRID, float)
    n, L = labels.shape
    means = np.full((grid.size, n, L), np.nan)
    stds = np.full((grid.size, n, L), np.nan)
    ivar_arr = None if ivar is None else np.asarray(ivar, float)
    for sub, te in subs:
        Xte = np.where(good[te], flux[te], np.nan)
        w = inputs.weights(Xte, None if ivar_arr is None else ivar_arr[te], infer.model_variance(sub),
                           sub.pixel_usable_)
        fobs = np.where(w > 0, Xte, 0.0)
        ok = (w > 0).sum(axis=1) > L
        idx = te[ok]
        with one_blas_thread():
            th, cov, *_ = infer.lm_batch(sub, fobs[ok], w[ok])
            for k, s in enumerate(grid):
                _, mu, C, _ = infer.posterior_batch(sub, fobs[ok], w[ok], th, s)
                means[k, idx], stds[k, idx] = infer.physical(sub, mu, C)
    best, score = posterior.choose_scale(means, labels)
    model.chi2_scale_ = float(grid[best])
    model.chi2_scale_cv_ = {"grid": grid, "score": score}
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (means[best] - labels) / stds[best]
    model.posterior_std_scale_, model.posterior_std_snr_ref_ = posterior.fit_std_calibration(
        z, quality.snr(flux, good, ivar_arr))


def cv_predict(model: Any, X: Any, y: Any, ivar: Any = None, *, snr: Any = None, ids: Any = None,
               nested: bool = False) -> Table:
    """k-fold cross-validated labels of the training set (Qiu 2025 sec. 3.3).

    The arguments and the table are those of :meth:`mdslam.slam.SLAM.cv_predict`.
    """
    model._check_fitted()
    flux, labels, good = inputs.check_training(X, y, ivar)
    ivar_arr = None if ivar is None else np.asarray(ivar, float)
    n = flux.shape[0]
    if snr is None and ivar_arr is None:
        snr = np.full(n, np.nan)
    folds = _iter_folds(n, model.cv, model.random_state)
    subs = [] if nested else [(refit_fixed(model, flux[tr], labels[tr], good[tr]), te) for tr, te in folds]
    if subs and check_likelihood(model.likelihood) == "correlated":    # noise models without the fold
        fold_noise(subs, folds, cv_residuals(subs, flux, labels, good, model.pixel_usable_),
                   model.noise_rank_cv_["rank"], int(model.random_state or 0))
    parts = []
    for k, (tr, te) in enumerate(_progress(folds, model.verbose, "CV folds", unit="fold")):
        if nested:
            sub = clone(model).set_params(verbose=False)
            sub.fit(np.where(good[tr], flux[tr], np.nan), labels[tr],
                    None if ivar_arr is None else ivar_arr[tr], wavelength=model.wavelength_,
                    label_names=model.label_names_, label_units=model.label_units_)
            sub.error_law_ = model.error_law_
        else:
            sub = subs[k][0]
        Xte = np.where(good[te], flux[te], np.nan)
        t = sub.predict_table(Xte, None if ivar_arr is None else ivar_arr[te],
                              snr=None if snr is None else np.asarray(snr, float)[te],
                              ids=te)
        parts.append(t)
    out = vstack(parts)
    out.sort("id")
    if ids is not None:
        out["id"] = np.asarray(ids)
    for li, name in enumerate(model.label_names_):
        out[f"{name}_true"] = labels[:, li]
    return out


def refit_fixed(model: Any, flux: np.ndarray, labels: np.ndarray, good: np.ndarray) -> Any:
    """A copy of ``model`` refitted on new data with the per-pixel hyperparameters fixed.

    Parameters
    ----------
    model : SLAM
        A fitted model (up to its likelihood scale at least).
    flux, good : (n, n_pix) arrays
        Fluxes (0 where not good) and their good-pixel mask.
    labels : (n, L) array, physical units.

    Returns
    -------
    SLAM, fitted; the standardisation and the SVRs are the new data's, the
    hyperparameters, CV-MSE (standardised) and label domain the model's.
    """
    sub = clone(model).set_params(verbose=False)
    Xs, Ys, scalers = _standardise(flux, labels, good)
    sub.label_mean_, sub.label_scale_, sub.flux_mean_, sub.flux_scale_ = scalers
    for attr in _SHARED_STATE:
        if not hasattr(model, attr):      # the likelihood scale is set at the end of fit
            continue
        setattr(sub, attr, getattr(model, attr))
    sub.pixel_usable_ = model.pixel_usable_ & (good.sum(axis=0) > 1)
    sub.cv_mse_scaled_ = model.cv_mse_scaled_
    sub.cv_md_scaled_ = model.cv_md_scaled_
    sub.cv_mse_ = model.cv_mse_scaled_ * sub.flux_scale_**2
    sub.cv_md_ = model.cv_md_scaled_ * sub.flux_scale_
    sub.X_train_ = Xs
    with one_blas_thread():
        sub.dual_coef_, sub.intercept_, _ = _refit_all(Xs, Ys, good, model.C_, model.epsilon_, model.gamma_,
                                                       sub.pixel_usable_, model.tol, model.refit_tol, False,
                                                       _n_workers(model.n_jobs), getattr(model, "kernel_rank", None))
    sub.training_domain_ = model.training_domain_
    sub.n_train_ = flux.shape[0]
    sub.n_features_in_ = model.n_features_in_
    sub._reset_cache()
    return sub
