"""A likelihood for correlated pixels: the model-error covariance and per-spectrum whitening.

Li 2021 eq. 3 writes ``chi2 = sum_j (f_j - m_j(theta))^2 / sigma_j^2``: every
pixel independent.  Resampled spectra (Gaia XP: 343 samples of ~110 basis
coefficients) are not, and the model errors of neighbouring pixels are
correlated too.  With ``SLAM(likelihood="correlated")`` the chi2 of eqs. 2-3
becomes

.. math::  \\chi^2(\\theta) = r^T \\Sigma^{-1} r, \\qquad r = f - m(\\theta), \\qquad
           \\Sigma = V V^T + \\mathrm{diag}(d) + \\mathrm{diag}(1/\\mathrm{ivar}),

where ``V V^T + diag(d)`` is a factor model (low rank plus diagonal) of the
covariance of the training set's CV residuals (each star's flux minus the
forward model of the folds without it, at its true labels; the model error
of eq. 3, now with its correlations), fitted by
:class:`sklearn.decomposition.FactorAnalysis` with the rank chosen by the
held-out log-likelihood of the residuals (:func:`fit_factor_model`).  The
last term is each spectrum's own noise.

Per spectrum, with ``A = diag(d + 1/ivar)`` and ``B = A^{-1/2} V`` (n_pix, k),
``Sigma^{-1/2}``-like whitening is

.. math::  W = (I - B M B^T) A^{-1/2}, \\qquad
           M = Q\\,\\mathrm{diag}\\!\\left(\\frac{1}{\\sqrt{1+s^2}\\,(\\sqrt{1+s^2}+1)}\\right) Q^T,

with ``B^T B = Q diag(s^2) Q^T``; then ``W^T W = Sigma^{-1}`` (Woodbury), so
``|W r|^2`` is the chi2 above.  :class:`Whitener` applies ``W`` to residuals
and Jacobians of a batch of spectra in ``O(n_pix k)`` per vector, so the
batched Levenberg-Marquardt (:mod:`mdslam.slam.lm`) and the posterior
(:mod:`mdslam.slam.posterior`) run unchanged on whitened quantities.  A
masked pixel (``ivar = 0``) has ``A^{-1/2} = 0``: it drops out exactly (the
marginal of the Gaussian over the other pixels).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["FACTOR_RANKS", "Whitener", "factor_model", "fit_factor_model", "residual_covariance"]

#: Candidate ranks ``k`` of the factor model, chosen by held-out log-likelihood.
FACTOR_RANKS = (0, 5, 10, 20, 40, 80)


class Whitener:
    """``W`` with ``W^T W = (V V^T + diag(1/w))^{-1}`` for a batch of spectra.

    Parameters
    ----------
    w : (m, n_pix) array
        Diagonal weights ``1 / (d_j + 1/ivar_ij)`` (flux^-2; 0 masks a pixel).
    V : (n_pix, k) array
        Factor loadings of the model-error covariance (flux units); ``k = 0``
        gives the diagonal likelihood of Li 2021 eq. 3.
    """

    def __init__(self, w: np.ndarray, V: np.ndarray):
        w = np.asarray(w, float)
        self.n_pix = w.shape[1]
        self.V = np.ascontiguousarray(np.asarray(V, float).reshape(self.n_pix, -1))
        self.sqrt_w = np.sqrt(w)
        k = self.V.shape[1]
        # B^T B = V^T diag(w) V = Q diag(s^2) Q^T per spectrum, (m, k, k)
        BtB = np.matmul((w[:, :, None] * self.V[None]).transpose(0, 2, 1), self.V) if k else np.zeros((len(w), 0, 0))
        s2, Q = np.linalg.eigh(BtB)
        r = np.sqrt(1.0 + np.clip(s2, 0.0, None))
        self.M = np.matmul(Q * (1.0 / (r * (r + 1.0)))[:, None, :], Q.transpose(0, 2, 1))
        self.C = Q * (1.0 / r)[:, None, :]                    # C C^T = (I + B^T B)^-1

    @property
    def rank(self) -> int:
        """Number of factors ``k``."""
        return self.V.shape[1]

    def _project(self, sw: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """``B^T Z = V^T (sqrt_w * Z)`` for (r, n, L) ``Z``, as (r, L, k): one matrix product for all rows."""
        r, n, L = Z.shape
        SZ = (sw[:, :, None] * Z).transpose(0, 2, 1).reshape(r * L, n)
        return (SZ @ self.V).reshape(r, L, self.rank)

    def __call__(self, rows, X: np.ndarray) -> np.ndarray:
        """``W_i X_i`` for the spectra ``rows``.

        Parameters
        ----------
        rows : index array or slice
            Which spectra of the batch (rows of ``w``) the rows of ``X`` belong to.
        X : (k_rows, n) or (k_rows, n, L) array, ``n >= n_pix``
            Residuals or Jacobians (flux units); columns beyond ``n_pix`` (e.g.
            the prior residuals of :func:`mdslam.slam.posterior.map_estimate`)
            pass unchanged.

        Returns
        -------
        array of the shape of ``X`` (whitened: dimensionless).
        """
        n = self.n_pix
        vec = X.ndim == 2
        Xp = X[:, :n, None] if vec else X[:, :n]
        sw = self.sqrt_w[rows]
        Z = sw[:, :, None] * Xp                                             # A^-1/2 X
        if self.rank:
            r, _, L = Z.shape
            t = np.matmul(self._project(sw, Z), self.M[rows])               # (M B^T Z)^T, (r, L, k)
            BMt = (t.reshape(r * L, self.rank) @ self.V.T).reshape(r, L, n).transpose(0, 2, 1)
            Z = Z - sw[:, :, None] * BMt
        Z = Z[..., 0] if vec else Z
        if X.shape[1] == n:
            return Z
        return np.concatenate([Z, X[:, n:]], axis=1)

    def grid_chi2(self, y: np.ndarray, F: np.ndarray) -> np.ndarray:
        """``chi2_ig = (y_i - F_g)^T Sigma_i^{-1} (y_i - F_g)`` for every spectrum and grid point.

        Parameters
        ----------
        y : (m, n_pix) array
            Observed fluxes (0 where masked).
        F : (g, n_pix) array
            Model fluxes at ``g`` grid points.

        Returns
        -------
        (m, g) array: the diagonal part by three matrix products, minus the
        low-rank part ``|C_i^T V^T diag(w_i) (y_i - F_g)|^2`` (Woodbury,
        ``C C^T = (I + B^T B)^-1``), whose ``V^T diag(w_i) F_g`` for all ``i``
        and ``g`` is one matrix product.
        """
        w = self.sqrt_w ** 2
        out = (w * y**2).sum(axis=1)[:, None] - 2.0 * (w * y) @ F.T + w @ (F**2).T
        if self.rank:
            m, k = y.shape[0], self.rank
            VW = (self.V.T[None, :, :] * w[:, None, :]).reshape(m * k, self.n_pix)     # rows V^T diag(w_i)
            D = ((w * y) @ self.V)[:, :, None] - (VW @ F.T).reshape(m, k, -1)           # (m, k, g)
            T = np.matmul(self.C.transpose(0, 2, 1), D)
            out = out - (T * T).sum(axis=1)
        return out


def residual_covariance(V: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The model-error covariance ``V V^T + diag(d)`` (n_pix, n_pix), flux^2."""
    return V @ V.T + np.diag(d)


def fit_factor_model(R: np.ndarray, folds: Sequence, ranks: Sequence[int] = FACTOR_RANKS,
                     random_state: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Low-rank-plus-diagonal covariance of CV residuals, rank chosen by held-out log-likelihood.

    For each candidate rank a :class:`sklearn.decomposition.FactorAnalysis`
    is fitted on the residuals of all folds but one and scored (mean Gaussian
    log-likelihood per star) on the held-out fold; the rank of the highest
    total score is refitted on all residuals.

    Parameters
    ----------
    R : (n_star, n_pix) array
        CV residuals ``flux - model(true labels)`` (flux units; 0 where masked).
    folds : sequence of (train, test) index arrays
        The CV folds (those of the residuals).
    ranks : sequence of int
        Candidate ranks (0: the diagonal covariance).
    random_state : int
        Seed of the factor analysis' randomised SVD.

    Returns
    -------
    V : (n_pix, k) array
        Loadings (flux units).
    d : (n_pix,) array
        Per-pixel residual variance not explained by the factors (flux^2).
    info : dict
        ``ranks`` and their held-out ``score`` (log-likelihood per star, summed over folds), ``rank``.
    """
    R = np.asarray(R, float)
    n, n_pix = R.shape
    ranks = [int(k) for k in ranks if 0 <= int(k) < min(n - 1, n_pix)]
    score = np.zeros(len(ranks))
    for tr, te in folds:
        for j, k in enumerate(ranks):
            score[j] += _heldout_loglike(R[tr], R[te], k, random_state) * len(te)
    best = ranks[int(np.argmax(score))]
    V, d = factor_model(R, best, random_state)
    return V, d, {"ranks": np.asarray(ranks, int), "score": score / n, "rank": best}


def factor_model(R: np.ndarray, k: int, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The rank-``k`` factor model of the residuals ``R``, their mean folded in as one more factor.

    Parameters
    ----------
    R : (n_star, n_pix) array
        CV residuals (flux units; 0 where masked).
    k : int
        Number of factors (0: the diagonal covariance about the mean).
    random_state : int
        Seed of :class:`sklearn.decomposition.FactorAnalysis`.

    Returns
    -------
    V : (n_pix, k) or (n_pix, k + 1) array
        Loadings (flux units), the residual mean the last column unless it is 0.
    d : (n_pix,) array
        Per-pixel variance not explained by the factors (flux^2).
    """
    from sklearn.decomposition import FactorAnalysis

    R = np.asarray(R, float)
    mean = R.mean(axis=0)
    if k == 0:
        V, d = np.zeros((R.shape[1], 0)), np.maximum(((R - mean) ** 2).mean(axis=0), 1e-300)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                                    # ConvergenceWarning
            fa = FactorAnalysis(n_components=k, random_state=random_state).fit(R)
        V, d = fa.components_.T.copy(), np.maximum(fa.noise_variance_, 1e-300)
    # the likelihood centres on the forward model, not on the residual mean: fold the mean in
    return _with_mean(V, d, mean, len(R))


def _with_mean(V: np.ndarray, d: np.ndarray, mean: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Second moment about zero from the covariance about ``mean``: the mean becomes one more factor.

    The CV residuals' mean (a systematic offset of the forward model) is
    part of the error the likelihood must allow for; ``E[r r^T] = Sigma + mu mu^T``.
    """
    if not np.any(mean):
        return V, d
    return np.column_stack([V, mean]), d


def _heldout_loglike(Rtr: np.ndarray, Rte: np.ndarray, k: int, random_state: int) -> float:
    """Mean Gaussian log-likelihood of ``Rte`` under a rank-``k`` factor model of ``Rtr`` (k = 0: diagonal)."""
    from sklearn.decomposition import FactorAnalysis

    if k == 0:
        mu, var = Rtr.mean(axis=0), np.maximum(Rtr.var(axis=0), 1e-300)
        return float(np.mean(-0.5 * (((Rte - mu) ** 2 / var).sum(axis=1) + np.log(2 * np.pi * var).sum())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fa = FactorAnalysis(n_components=k, random_state=random_state).fit(Rtr)
    return float(fa.score(Rte))
