"""Baseline label estimators to set beside SLAM on the same cross-validation folds.

Two simple data-driven models, each with ``fit(flux, y, ivar)`` and
``predict(flux, ivar)``:

* :class:`PCARidge` -- discriminative: the pixels standardised, the spectra
  reduced to their first principal components (scikit-learn ``PCA``), labels regressed on them by
  ridge regression with the penalty chosen by efficient leave-one-out CV
  (``RidgeCV``) inside the training data.
* :class:`CannonLike` -- generative, The Cannon's form: every pixel's flux is a
  quadratic polynomial in the standardised labels, fitted by weighted least
  squares with a per-pixel intrinsic scatter; a spectrum's labels minimise
  chi^2 (``scipy.optimize.least_squares``) from the best training-label start.

:func:`cv_predict` gives every star a label from the model fitted without its
fold, on folds given explicitly (:func:`kfold` reproduces the folds of
``SLAM(cv=k, random_state=seed)``), so skill scores of SLAM and the baselines
compare like with like.
"""

from __future__ import annotations

from itertools import combinations_with_replacement

import numpy as np
from scipy.optimize import least_squares
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

__all__ = ["PCARidge", "CannonLike", "kfold", "cv_predict", "RIDGE_ALPHAS"]

#: Ridge penalties tried by :class:`PCARidge` (leave-one-out CV on the training part).
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-4, 4, 17))


def _fill(flux: np.ndarray, ivar: np.ndarray | None, fill: np.ndarray) -> np.ndarray:
    """Flux with non-finite or zero-ivar pixels replaced by ``fill`` (per pixel)."""
    f = np.array(flux, float, copy=True)
    bad = ~np.isfinite(f)
    if ivar is not None:
        bad |= ~(np.asarray(ivar, float) > 0)
    f[bad] = np.broadcast_to(fill, f.shape)[bad]
    return f


class PCARidge:
    """Standardised pixels, PCA, then ridge regression of the labels on the PC scores (scikit-learn).

    Parameters
    ----------
    n_components : int
        Principal components kept (default 20).
    alphas : sequence of float
        Ridge penalties tried by leave-one-out CV on the training data.
    """

    def __init__(self, n_components: int = 20, alphas=RIDGE_ALPHAS):
        self.n_components = n_components
        self.alphas = alphas

    def fit(self, flux: np.ndarray, y: np.ndarray, ivar: np.ndarray | None = None) -> PCARidge:
        """Fit on ``flux`` (n_star, n_pix) and labels ``y`` (n_star, n_label); returns self."""
        flux = np.asarray(flux, float)
        self.fill_ = np.nanmedian(np.where(np.isfinite(flux), flux, np.nan), axis=0)
        X = _fill(flux, ivar, self.fill_)
        self.pipeline_ = make_pipeline(StandardScaler(), PCA(n_components=min(self.n_components, *X.shape)),
                                       RidgeCV(alphas=self.alphas)).fit(X, np.asarray(y, float))
        return self

    def predict(self, flux: np.ndarray, ivar: np.ndarray | None = None) -> np.ndarray:
        """Labels (n_star, n_label) of spectra ``flux`` (n_star, n_pix)."""
        X = _fill(np.asarray(flux, float), ivar, self.fill_)
        return np.asarray(self.pipeline_.predict(X), float).reshape(len(X), -1)


class CannonLike:
    """Quadratic-in-labels forward model (The Cannon's form) with least-squares label inference.

    ``f_j(l) = theta_j . v(l)``, ``v = [1, l_1..l_L, l_a l_b (a <= b)]`` in
    standardised labels; per pixel, ``theta_j`` by weighted least squares with
    weights ``1 / (sigma_obs^2 + s_j^2)``, ``s_j^2`` the pixel's intrinsic
    scatter (iterated twice from the unweighted residual variance). Labels of
    a spectrum: ``least_squares`` on the weighted residuals, started from the
    training label whose model spectrum fits best, bounded to the training
    label range widened by ``pad`` standard deviations.

    Parameters
    ----------
    ridge : float
        Small ridge penalty on ``theta`` (standardised units) for stability.
    pad : float
        Bounds of the inferred labels: training range +- ``pad`` std.
    """

    def __init__(self, ridge: float = 1e-6, pad: float = 0.0):
        self.ridge = ridge
        self.pad = pad

    def _design(self, ls: np.ndarray) -> np.ndarray:
        ls = np.atleast_2d(ls)
        quad = [ls[:, a] * ls[:, b] for a, b in combinations_with_replacement(range(ls.shape[1]), 2)]
        return np.column_stack([np.ones(len(ls)), ls, *quad])

    def fit(self, flux: np.ndarray, y: np.ndarray, ivar: np.ndarray | None = None) -> CannonLike:
        """Fit on ``flux`` (n_star, n_pix), labels ``y`` (n_star, n_label), ``ivar`` like flux; returns self."""
        flux = np.asarray(flux, float)
        y = np.asarray(y, float)
        self.mu_, self.sd_ = y.mean(axis=0), y.std(axis=0) + 1e-12
        ls = (y - self.mu_) / self.sd_
        self.lo_, self.hi_ = ls.min(axis=0) - self.pad, ls.max(axis=0) + self.pad
        V = self._design(ls)
        iv = np.ones_like(flux) if ivar is None else np.asarray(ivar, float)
        good = np.isfinite(flux) & np.isfinite(iv) & (iv > 0)
        F = np.where(good, flux, 0.0)
        var_obs = np.where(good, 1.0 / np.where(good, iv, 1.0), np.inf)
        s2 = np.zeros(flux.shape[1])
        n_par = V.shape[1]
        theta = np.zeros((n_par, flux.shape[1]))
        for _ in range(3):
            W = np.where(good, 1.0 / (var_obs + s2), 0.0)           # (n_star, n_pix)
            for j in range(flux.shape[1]):
                w = W[:, j]
                A = V.T @ (V * w[:, None]) + self.ridge * np.eye(n_par)
                theta[:, j] = np.linalg.solve(A, V.T @ (w * F[:, j]))
            r = np.where(good, F - V @ theta, np.nan)
            s2 = np.maximum(np.nanvar(r, axis=0) - np.nanmedian(np.where(good, var_obs, np.nan), axis=0), 0.0)
        self.theta_, self.s2_ = theta, np.nan_to_num(s2)
        self.start_ls_ = ls
        self.start_flux_ = V @ theta
        return self

    def predict_flux(self, y: np.ndarray) -> np.ndarray:
        """Model spectra (n, n_pix) at labels ``y`` (n, n_label), physical units."""
        return self._design((np.atleast_2d(y) - self.mu_) / self.sd_) @ self.theta_

    def predict(self, flux: np.ndarray, ivar: np.ndarray | None = None) -> np.ndarray:
        """Labels (n_star, n_label) of spectra ``flux`` (n_star, n_pix); NaN where no pixel is usable."""
        flux = np.atleast_2d(np.asarray(flux, float))
        iv = np.ones_like(flux) if ivar is None else np.atleast_2d(np.asarray(ivar, float))
        out = np.full((len(flux), self.mu_.size), np.nan)
        for i in range(len(flux)):
            good = np.isfinite(flux[i]) & np.isfinite(iv[i]) & (iv[i] > 0)
            if good.sum() <= self.mu_.size:
                continue
            sw = np.sqrt(1.0 / (1.0 / iv[i, good] + self.s2_[good]))
            f = flux[i, good]
            chi2 = np.sum(((self.start_flux_[:, good] - f) * sw) ** 2, axis=1)
            x0 = np.clip(self.start_ls_[np.argmin(chi2)], self.lo_ + 1e-9, self.hi_ - 1e-9)
            th = self.theta_[:, good]
            res = least_squares(lambda ls, th=th, f=f, sw=sw: (self._design(ls) @ th - f)[0] * sw, x0,
                                bounds=(self.lo_, self.hi_), method="trf")
            out[i] = res.x * self.sd_ + self.mu_
        return out


def kfold(n: int, k: int = 5, seed: int | None = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled k-fold (train, test) index pairs: ``KFold(k, shuffle=True, random_state=seed)``.

    The same pairs as ``SLAM(cv=k, random_state=seed)`` uses, and ``SLAM(cv=folds)``
    accepts the list itself.
    """
    splitter = KFold(n_splits=int(k), shuffle=True, random_state=seed)
    return [(np.asarray(a), np.asarray(b)) for a, b in splitter.split(np.zeros((int(n), 1)))]


def cv_predict(estimator, flux: np.ndarray, y: np.ndarray, ivar: np.ndarray | None,
               folds) -> np.ndarray:
    """Labels of every star from ``estimator`` fitted on the other folds.

    Parameters
    ----------
    estimator
        An object with ``fit(flux, y, ivar)`` and ``predict(flux, ivar)``
        (:class:`PCARidge`, :class:`CannonLike`); refitted on each fold.
    flux, ivar : (n_star, n_pix) arrays
        Spectra and inverse variances (``ivar`` may be None).
    y : (n_star, n_label) array
        Reference labels.
    folds : sequence of (train, test) index arrays
        E.g. :func:`kfold`; every star should be in exactly one test part.

    Returns
    -------
    (n_star, n_label) array
        Cross-validated labels; NaN for stars in no test part.
    """
    flux = np.asarray(flux, float)
    y = np.asarray(y, float).reshape(len(flux), -1)
    out = np.full(y.shape, np.nan)
    for tr, te in folds:
        est = estimator.fit(flux[tr], y[tr], None if ivar is None else np.asarray(ivar)[tr])
        out[te] = est.predict(flux[te], None if ivar is None else np.asarray(ivar)[te])
    return out
