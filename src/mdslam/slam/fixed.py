"""A SLAM model fitted at given per-pixel hyperparameters: no grid search.

The grid search of :meth:`mdslam.slam.SLAM.fit` is the expensive part of
training.  Once it has been run (e.g. the catalogue's tuned model,
:mod:`mdslam.compendium.tuning`), the per-pixel choices (C, epsilon, gamma),
their CV-MSE and the CV choice of the likelihood scale can be stored in a
small table and the model refitted from them in seconds: the SVRs of every
pixel on all training stars, the standardisation and the fit-quality
thresholds, exactly as at the end of ``fit``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import checks
from . import cv as _cv
from . import infer, inputs
from ._util import _n_workers
from .estimator import SLAM
from .training import _grid_edge_fraction, _iter_folds, _refit_all, _standardise

__all__ = ["fit_fixed"]


def fit_fixed(model: SLAM, X: np.ndarray, y: np.ndarray, ivar: np.ndarray | None, hyper: dict, *,
              wavelength: np.ndarray | None = None, label_names: Sequence[str] | None = None,
              label_units: Sequence[str] | None = None) -> SLAM:
    """Fit ``model`` on (X, y) at the per-pixel hyperparameters ``hyper`` (no grid search).

    With ``likelihood="correlated"`` the noise model and chi2 scale come from
    ``model.cv``-fold CV refits (:func:`mdslam.slam.cv.fit_likelihood_scale`), not ``hyper``.

    Parameters
    ----------
    model : SLAM
        An unfitted estimator; its ``C``, ``epsilon``, ``gamma`` must be the
        grid the hyperparameters were chosen on (kept for the edge fractions).
    X, ivar : (n_star, n_pix) arrays
        Normalised training fluxes and inverse variances (the stars the
        hyperparameters were chosen on).
    y : (n_star, n_label) array
        Training labels, physical units.
    hyper : dict
        ``C``, ``epsilon``, ``gamma`` (n_pix,), ``cv_mse_scaled`` and
        ``cv_md_scaled`` (n_pix,, standardised flux units), ``usable`` (n_pix,
        bool); optional ``chi2_scale`` (float), ``chi2_scale_grid`` and
        ``chi2_scale_score`` (the CV choice), ``posterior_std_scale``
        (n_label, 2) and ``posterior_std_snr_ref`` (float).
    wavelength, label_names, label_units
        As for :meth:`mdslam.slam.SLAM.fit`.

    Returns
    -------
    SLAM
        ``model``, fitted. ``cv_mse_grid_`` holds the chosen point's CV-MSE
        only (NaN elsewhere: the grid itself was not searched here).

    Raises
    ------
    ValueError
        ``hyper`` arrays whose length differs from the number of pixels.
    """
    flux, labels, good = inputs.check_training(X, y, ivar)
    n, n_pix = flux.shape
    L = labels.shape[1]
    for key in ("C", "epsilon", "gamma", "cv_mse_scaled", "cv_md_scaled", "usable"):
        if np.shape(hyper[key]) != (n_pix,):
            raise ValueError(f"hyperparameters: {key!r} has shape {np.shape(hyper[key])}, expected ({n_pix},)")
    model.label_names_ = list(label_names) if label_names is not None else [f"label{k}" for k in range(L)]
    model.label_units_ = list(label_units) if label_units is not None else [""] * L
    model.wavelength_ = (np.arange(n_pix, dtype=float) if wavelength is None
                         else np.asarray(wavelength, float).ravel())
    Xs, Ys, scalers = _standardise(flux, labels, good)
    model.label_mean_, model.label_scale_, model.flux_mean_, model.flux_scale_ = scalers
    model.param_grid_ = {k: np.asarray(getattr(model, k), float).ravel() for k in ("C", "epsilon", "gamma")}
    model.C_, model.epsilon_, model.gamma_ = (np.asarray(hyper[k], float) for k in ("C", "epsilon", "gamma"))
    model.pixel_usable_ = np.asarray(hyper["usable"], bool) & (good.sum(axis=0) > 1)
    model.cv_mse_scaled_ = np.where(model.pixel_usable_, np.asarray(hyper["cv_mse_scaled"], float), np.inf)
    model.cv_md_scaled_ = np.asarray(hyper["cv_md_scaled"], float)
    model.cv_mse_ = model.cv_mse_scaled_ * model.flux_scale_**2
    model.cv_md_ = model.cv_md_scaled_ * model.flux_scale_
    model.cv_mse_grid_ = _chosen_only(model)
    model.grid_edge_fraction_ = _grid_edge_fraction(model)
    model.X_train_ = Xs
    model.dual_coef_, model.intercept_, info = _refit_all(
        Xs, Ys, good, model.C_, model.epsilon_, model.gamma_, model.pixel_usable_, model.tol, model.refit_tol,
        model.verbose, _n_workers(model.n_jobs))
    model.training_domain_ = np.column_stack([labels.min(axis=0), labels.max(axis=0)])
    model.n_train_, model.n_features_in_ = n, n_pix
    model.error_law_ = None
    model.solver_info_ = {**info, "n_folds": 0}
    model._reset_cache()
    model.quick_flux_ = None
    model.quick_flux_ = infer.start_flux(model)           # LM's starting grid, stored with the model
    if _cv.check_likelihood(model.likelihood) == "correlated":
        _cv.fit_likelihood_scale(model, flux, labels, good, ivar, _iter_folds(n, model.cv, model.random_state))
    else:
        _set_likelihood_scale(model, hyper, L)
    model.knn_k_ = checks.KNN_K
    model.knn_threshold_ = checks.knn_threshold(Xs, model.knn_k_)
    model.rchi2_threshold_ = checks.rchi2_threshold(
        infer.training_rchi2(model, flux, good, None if ivar is None else np.asarray(ivar, float)))
    return model


def _chosen_only(model: SLAM) -> np.ndarray:
    """(n_pix, nC, neps, ng) CV-MSE grid with the chosen point's value and NaN elsewhere."""
    g = model.param_grid_
    out = np.full((model.C_.size, g["C"].size, g["epsilon"].size, g["gamma"].size), np.nan)
    idx = [np.argmin(np.abs(g[k][None, :] - getattr(model, k + "_")[:, None]), axis=1)
           for k in ("C", "epsilon", "gamma")]
    out[np.arange(model.C_.size), idx[0], idx[1], idx[2]] = model.cv_mse_scaled_
    return out


def _set_likelihood_scale(model: SLAM, hyper: dict, n_label: int) -> None:
    """``chi2_scale_``, its CV record and the posterior-std calibration from ``hyper`` (defaults: none)."""
    model.chi2_scale_ = float(hyper.get("chi2_scale", 1.0 if model.chi2_scale == "cv" else model.chi2_scale))
    grid, score = hyper.get("chi2_scale_grid"), hyper.get("chi2_scale_score")
    model.chi2_scale_cv_ = (None if grid is None or score is None
                            else {"grid": np.asarray(grid, float), "score": np.asarray(score, float)})
    cal = hyper.get("posterior_std_scale")
    model.posterior_std_scale_ = (np.column_stack([np.ones(n_label), np.zeros(n_label)]) if cal is None
                                  else np.asarray(cal, float).reshape(n_label, 2))
    model.posterior_std_snr_ref_ = float(hyper.get("posterior_std_snr_ref", 1.0))
