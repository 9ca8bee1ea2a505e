"""SLAM's label posterior (Li 2021 eq. 2): priors, the scaled likelihood and posterior summaries.

Li et al. 2021 eq. 2 defines the labels of a spectrum ``f`` as the maximum of

.. math::  p(\\theta | f) \\propto p(f | \\theta)\\, p(\\theta),
           \\qquad \\ln p(f | \\theta) = -\\frac{\\chi^2(\\theta)}{2 s} + \\text{const},

with ``chi2`` the weighted sum of squared residuals of eq. 3 (weights
``1/(sigma_obs^2 + CV-MSE_j)``).  Eq. 3 counts every pixel as independent
(``s = 1``); neighbouring pixels of a resampled or smoothed spectrum are not,
so the chi2 is too confident and the prior gets no weight.  ``s`` (the
"chi2 scale", about ``n_pix / n_independent``) is chosen by cross-validation
in :meth:`mdslam.slam.SLAM.fit`.

Everything here works in standardised label units (``(label - mean) / std`` of
the training labels) and is batched over spectra:

* :class:`Prior` -- flat over a box, a Gaussian, or a user log density;
* :func:`map_estimate` -- the posterior maximum by Levenberg-Marquardt with the
  Gaussian prior as ``L`` extra residuals (:mod:`mdslam.slam.lm`);
* :func:`posterior_moments` -- posterior mean and covariance by importance
  sampling on Gauss-Hermite nodes of the Laplace approximation around the MAP
  (exact for a Gaussian posterior, a correction where it is not).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import lm

#: Margin of the flat prior's box beyond the training labels, in units of their range.
BOX_MARGIN = 0.1
#: Gauss-Hermite nodes per label and proposal width (in Laplace widths) of :func:`posterior_moments`.
N_NODES = 3
INFLATE = 1.5
#: Below this effective number of nodes the posterior covariance falls back to Laplace's.
MIN_N_EFF = 3.0
#: :func:`fit_std_calibration` leaves out normalised residuals beyond this many widths.
CLIP_Z = 5.0


@dataclass(frozen=True)
class Prior:
    """A label prior in standardised label units.

    Attributes
    ----------
    kind : str
        ``"flat"``, ``"gaussian"`` or ``"callable"``.
    lo, hi : (L,) arrays
        Support box (the flat prior is uniform inside, every prior is cut to it).
    mean, cov : (L,) and (L, L) arrays or None
        The Gaussian (``"gaussian"``), or the Gaussian with the callable's moments
        on a grid (``"callable"``, used only for the MAP start and the proposal).
    logpdf : callable or None
        ``logpdf(theta (m, L)) -> (m,)`` of a ``"callable"`` prior.
    """

    kind: str
    lo: np.ndarray
    hi: np.ndarray
    mean: np.ndarray | None = None
    cov: np.ndarray | None = None
    logpdf: Callable[[np.ndarray], np.ndarray] | None = None

    def log_density(self, theta: np.ndarray) -> np.ndarray:
        """Log prior (up to a constant) at ``theta`` (..., L); ``-inf`` outside the box."""
        theta = np.asarray(theta, float)
        inside = np.all((theta >= self.lo) & (theta <= self.hi), axis=-1)
        if self.kind == "flat":
            out = np.zeros(theta.shape[:-1])
        elif self.kind == "gaussian":
            d = theta - self.mean
            out = -0.5 * np.einsum("...i,ij,...j->...", d, np.linalg.inv(self.cov), d)
        else:
            flat = theta.reshape(-1, theta.shape[-1])
            out = np.asarray(self.logpdf(flat), float).reshape(theta.shape[:-1])
        return np.where(inside, out, -np.inf)

    @property
    def precision_factor(self) -> np.ndarray | None:
        """Upper-triangular ``U`` with ``U^T U = cov^-1`` (None for a flat prior)."""
        if self.kind == "flat" or self.cov is None:
            return None
        return np.linalg.cholesky(np.linalg.inv(self.cov)).T


def training_box(X_train: np.ndarray, margin: float = BOX_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """Box of the training labels widened by ``margin`` of their range on each side, (L,), (L,)."""
    lo, hi = X_train.min(axis=0), X_train.max(axis=0)
    pad = margin * np.maximum(hi - lo, 1e-12)
    return lo - pad, hi + pad


def make_prior(spec, X_train: np.ndarray, label_mean: np.ndarray, label_scale: np.ndarray) -> Prior | None:
    """The prior of ``SLAM(prior=spec)`` in standardised label units.

    Parameters
    ----------
    spec : None, "flat", "training", (n, L) array or callable
        None: no posterior (maximum likelihood only). ``"flat"``: uniform over
        the training-label box (widened by :data:`BOX_MARGIN`).  ``"training"``:
        a Gaussian with the mean and covariance of the training labels.  An
        array: label samples (physical units), a Gaussian with their mean and
        covariance.  A callable: ``log p(labels)`` of an (m, L) array of labels
        in physical units, returning (m,).
    X_train : (n_train, L) array
        Standardised training labels.
    label_mean, label_scale : (L,) arrays
        The label standardisation.

    Returns
    -------
    Prior or None
    """
    if spec is None:
        return None
    lo, hi = training_box(X_train)
    if isinstance(spec, str):
        if spec == "flat":
            return Prior("flat", lo, hi)
        if spec == "training":
            return Prior("gaussian", lo, hi, X_train.mean(axis=0), np.cov(X_train, rowvar=False, ddof=1))
        raise ValueError(f"prior={spec!r}: use None, 'flat', 'training', an (n, n_label) array or a callable")
    if callable(spec):
        def logpdf(th):
            return spec(label_mean + th * label_scale)
        grid = label_grid(lo, hi, 9)
        lp = np.asarray(logpdf(grid), float)
        if lp.shape != (grid.shape[0],):
            raise ValueError(f"prior callable returned shape {lp.shape}, expected ({grid.shape[0]},)")
        w = np.exp(lp - np.max(lp[np.isfinite(lp)], initial=0.0))
        w = np.where(np.isfinite(w), w, 0.0)
        if not w.sum() > 0:
            raise ValueError("prior callable is zero (or not finite) over the whole training-label box")
        mean = (w[:, None] * grid).sum(0) / w.sum()
        d = grid - mean
        cov = np.einsum("k,ki,kj->ij", w, d, d) / w.sum()
        return Prior("callable", lo, hi, mean, cov, logpdf)
    samples = np.asarray(spec, float)
    L = X_train.shape[1]
    if samples.ndim != 2 or samples.shape[1] != L or samples.shape[0] <= L:
        raise ValueError(f"prior array must be (n > {L}, {L}) label samples, got shape {samples.shape}")
    s = (samples - label_mean) / label_scale
    return Prior("gaussian", lo, hi, s.mean(axis=0), np.cov(s, rowvar=False, ddof=1))


def label_grid(lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    """Regular ``n**L`` grid over the box ``[lo, hi]``, (n**L, L)."""
    axes = [np.linspace(a, b, n) for a, b in zip(lo, hi, strict=True)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.column_stack([m.ravel() for m in mesh])


def gauss_hermite(L: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Tensor Gauss-Hermite nodes and log weights for a standard normal in ``L`` dimensions.

    Returns
    -------
    z : (n**L, L) array
        Nodes (``E[g(z)] ~= sum_k exp(logw_k) g(z_k)`` for ``z ~ N(0, I)``).
    logw : (n**L,) array
        Log weights, summing (as weights) to 1.
    """
    x, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / w.sum()
    mesh = np.meshgrid(*([x] * L), indexing="ij")
    z = np.column_stack([m.ravel() for m in mesh])
    wm = np.meshgrid(*([np.log(w)] * L), indexing="ij")
    return z, np.sum([m.ravel() for m in wm], axis=0)


def map_estimate(model: lm.ModelFn, y: np.ndarray, w: np.ndarray, theta0: np.ndarray, prior: Prior,
                 chi2_scale: float, whiten: lm.Whiten | None = None, **lm_kw) -> lm.LMResult:
    """Maximum of the posterior, ``chi2(theta)/s + (theta - mu)^T P (theta - mu)`` minimised by LM.

    The Gaussian part of the prior enters as ``L`` extra residuals
    ``U (theta - mu)`` with weight 1 (``U^T U = P``).  A flat prior adds
    nothing: the MAP is the maximum-likelihood point, moved into the box.

    Parameters
    ----------
    model : callable
        As for :func:`mdslam.slam.lm.levenberg_marquardt`: ``theta -> (flux, dflux/dtheta)``.
    y, w : (m, n_pix) arrays
        Observed flux (0 where masked) and likelihood weights of eq. 3.
    theta0 : (m, L) array
        Starting labels (e.g. the maximum-likelihood point).
    prior : Prior
    chi2_scale : float
        ``s`` of the scaled likelihood.
    whiten : Whitener, optional
        Correlated pixels (:mod:`mdslam.slam.noise`): residuals and Jacobians
        whitened per spectrum, the chi2 ``r^T Sigma^-1 r`` (``w`` then 1 or 0).
    **lm_kw
        ``max_iter``, ``xtol``, ``ftol`` of the LM.

    Returns
    -------
    LMResult
        ``chi2`` is the penalised objective ``chi2/s + prior term``; ``cov``
        the Laplace covariance ``(J^T W J / s + P)^-1``.
    """
    U = prior.precision_factor
    L = theta0.shape[1]
    if U is None:
        res = lm.levenberg_marquardt(model, y, w / chi2_scale, theta0, whiten=whiten, **lm_kw)
        return res._replace(theta=np.clip(res.theta, prior.lo, prior.hi))
    mu = prior.mean
    m = y.shape[0]

    def model_aug(th):
        f, J = model(th)
        fp = (th - mu) @ U.T
        Jp = np.broadcast_to(U, (th.shape[0], L, L))
        return np.concatenate([f, fp], axis=1), np.concatenate([J, Jp], axis=1)

    y_aug = np.concatenate([y, np.zeros((m, L))], axis=1)
    w_aug = np.concatenate([w / chi2_scale, np.ones((m, L))], axis=1)
    return lm.levenberg_marquardt(model_aug, y_aug, w_aug, theta0, whiten=whiten, **lm_kw)


def posterior_moments(flux_fn: Callable[[np.ndarray], np.ndarray], y: np.ndarray, w: np.ndarray,
                      centre: np.ndarray, cov: np.ndarray, prior: Prior, chi2_scale: float, *,
                      n_nodes: int = N_NODES, inflate: float = INFLATE,
                      whiten: lm.Whiten | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior mean and covariance by importance sampling on Gauss-Hermite nodes.

    The proposal is the Laplace Gaussian ``N(centre, inflate**2 cov)``; at its
    ``n_nodes**L`` Gauss-Hermite nodes the exact log posterior
    ``-chi2/(2 s) + log prior`` is evaluated and the nodes are reweighted by
    posterior / proposal.  For a Gaussian posterior and ``inflate = 1`` this is
    exact; the inflation makes it robust to a posterior wider than Laplace.

    Parameters
    ----------
    flux_fn : callable
        ``flux_fn(theta (k, L)) -> model flux (k, n_pix)``.
    y, w : (m, n_pix) arrays
        Observed flux (0 where masked) and weights.
    centre : (m, L) array
        Proposal centres (MAP).
    cov : (m, L, L) array
        Laplace covariances (rows with a non-finite covariance get NaN output).
    prior : Prior
    chi2_scale : float
    n_nodes : int
        Nodes per dimension.
    inflate : float
        Proposal width in units of the Laplace width.
    whiten : Whitener, optional
        As for :func:`map_estimate`.

    Returns
    -------
    mean : (m, L) array
    cov : (m, L, L) array
    n_eff : (m,) array
        Effective number of nodes ``(sum w)^2 / sum w^2`` (1: one node dominates,
        the proposal missed the posterior).
    """
    m, L = centre.shape
    z, logw_q = gauss_hermite(L, n_nodes)
    k = z.shape[0]
    ok = np.all(np.isfinite(cov), axis=(1, 2)) & np.all(np.isfinite(centre), axis=1)
    C = np.where(ok[:, None, None], cov, np.eye(L))
    C = 0.5 * (C + C.transpose(0, 2, 1)) + 1e-12 * np.eye(L)
    try:
        Lc = np.linalg.cholesky(C)
    except np.linalg.LinAlgError:
        Lc = np.zeros_like(C)
        for i in range(m):
            ev, V = np.linalg.eigh(C[i])
            Lc[i] = V * np.sqrt(np.clip(ev, 1e-12, None))
    c0 = np.where(ok[:, None], centre, 0.0)
    nodes = c0[:, None, :] + inflate * np.einsum("mij,kj->mki", Lc, z)          # (m, k, L)
    # log q at the nodes relative to the centre: -|z|^2/2 (same for all rows), so the
    # importance weight of node k is  GH weight * p(node) * exp(|z|^2 / 2)
    logp = prior.log_density(nodes)                                               # (m, k)
    chi2 = np.empty((m, k))
    for j in range(k):
        F = flux_fn(nodes[:, j])
        r = y - F if whiten is None else whiten(slice(None), y - F)
        chi2[:, j] = (w * r * r).sum(axis=1)
    logpost = -0.5 * chi2 / chi2_scale + logp
    lw = logw_q[None, :] + logpost + 0.5 * (z * z).sum(axis=1)[None, :]
    lw = np.where(np.isfinite(lw), lw, -np.inf)
    top = np.max(lw, axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    wt = np.exp(lw - top)
    tot = wt.sum(axis=1)
    good = ok & (tot > 0)
    wt = wt / np.where(tot > 0, tot, 1.0)[:, None]
    mean = np.einsum("mk,mki->mi", wt, nodes)
    d = nodes - mean[:, None, :]
    cov_out = np.einsum("mk,mki,mkj->mij", wt, d, d)
    n_eff = 1.0 / np.maximum((wt * wt).sum(axis=1), 1e-300)
    mean[~good] = np.nan
    cov_out[~good] = np.nan
    n_eff[~good] = 0.0
    return mean, cov_out, n_eff


def fit_std_calibration(z: np.ndarray, snr: np.ndarray, n_bins: int = 4,
                        min_per_bin: int = 10) -> tuple[np.ndarray, float]:
    """Factor on the posterior std that gives CV normalised residuals of unit width, as a power of SNR.

    In equal-count SNR bins the root mean square of ``z = (mean - truth) / std``
    is fitted by ``f(SNR) = f_ref * (SNR / SNR_ref)**d`` (least squares in log;
    ``d = 0`` with fewer than two bins or no SNR).  The root mean square is
    clipped (:func:`clipped_rms`, :data:`CLIP_Z`): a fit caught in a wrong
    mode of the likelihood (an error of many widths, which no width describes)
    would otherwise set the factor of its whole bin; on the mock LAMOST track
    one such star of 500 took the lowest-SNR Teff factor from 1.0 to 1.4.

    Parameters
    ----------
    z : (n, L) array
        CV normalised residuals (NaN ignored).
    snr : (n,) array
        Spectral SNR (NaN: unknown).
    n_bins, min_per_bin : int
        Equal-count SNR bins; bins are merged until each has ``min_per_bin`` stars.

    Returns
    -------
    cal : (L, 2) array
        ``f_ref`` and ``d`` per label.
    snr_ref : float
        The median SNR (1 if unknown).
    """
    z = np.array(z, float, ndmin=2)
    n, L = z.shape
    snr = np.asarray(snr, float).ravel()
    cal = np.column_stack([np.ones(L), np.zeros(L)])
    has = np.isfinite(snr) & (snr > 0)
    snr_ref = float(np.median(snr[has])) if has.any() else 1.0
    nb = int(max(1, min(n_bins, has.sum() // max(min_per_bin, 1))))
    for li in range(L):
        ok = np.isfinite(z[:, li])
        if ok.sum() < 3:
            continue
        cal[li, 0] = clipped_rms(z[ok, li])
        okb = ok & has
        if nb < 2 or okb.sum() < 2 * min_per_bin:
            continue
        edges = np.quantile(snr[okb], np.linspace(0, 1, nb + 1))
        x, v = [], []
        for k in range(nb):
            sel = okb & (snr >= edges[k]) & ((snr < edges[k + 1]) if k < nb - 1 else (snr <= edges[k + 1]))
            if sel.sum() >= 3:
                x.append(np.log(np.median(snr[sel]) / snr_ref))
                v.append(np.log(clipped_rms(z[sel, li])))
        if len(x) >= 2 and np.all(np.isfinite(v)):
            d, logf = np.polyfit(np.asarray(x), np.asarray(v), 1)
            cal[li] = (float(np.exp(logf)), float(d))
    return cal, snr_ref


def clipped_rms(z: np.ndarray, k: float = CLIP_Z, n_iter: int = 5) -> float:
    """Root mean square of ``z`` about 0 without the values beyond ``k`` times it (iterated).

    The first clip is at ``k`` times the robust width ``1.4826 median|z|`` (a
    plain root mean square can never clip the one outlier of a small sample:
    it is at most ``sqrt(n)`` times it). For Gaussian ``z`` the result is the
    plain root mean square (the clipped mass is ~1e-6 at ``k = 5``); a few gross
    outliers no longer set it.

    Parameters
    ----------
    z : (n,) array
        Normalised residuals (dimensionless; NaN ignored).
    k : float
        Clip at ``k`` times the current root mean square.
    n_iter : int
        Clipping passes.

    Returns
    -------
    float (NaN without a finite value).
    """
    z = np.asarray(z, float)
    z = z[np.isfinite(z)]
    if z.size == 0:
        return float("nan")
    r = float(1.4826 * np.median(np.abs(z))) or float(np.sqrt(np.mean(z * z)))
    for _ in range(n_iter):
        keep = np.abs(z) <= k * r
        if not keep.any():
            break
        r = float(np.sqrt(np.mean(z[keep] ** 2)))
    return r


def std_factor(cal: np.ndarray, snr_ref: float, snr: np.ndarray) -> np.ndarray:
    """``f_ref * (SNR / SNR_ref)**d`` per spectrum and label, (m, L); ``f_ref`` where the SNR is unknown."""
    snr = np.asarray(snr, float).ravel()
    cal = np.asarray(cal, float).reshape(-1, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        lr = np.log(snr / snr_ref)
    lr = np.where(np.isfinite(lr), lr, 0.0)
    return cal[None, :, 0] * np.exp(lr[:, None] * cal[None, :, 1])


def choose_scale(means: np.ndarray, truth: np.ndarray) -> tuple[int, np.ndarray]:
    """Index of the candidate whose CV labels have the lowest mean normalised MSE.

    Parameters
    ----------
    means : (n_candidates, n, L) array
        CV posterior means of the ``n`` training stars under each candidate (NaN: not fitted).
    truth : (n, L) array
        Training labels.

    Returns
    -------
    best : int
    score : (n_candidates,) array
        ``mean over labels of MSE / Var(truth)`` (``1 - skill``), NaN-robust.
    """
    var = truth.var(axis=0)
    var = np.where(var > 0, var, 1.0)
    with np.errstate(invalid="ignore"):
        score = np.array([np.nanmean(np.nanmean((m - truth) ** 2, axis=0) / var) for m in means])
    return int(np.argmin(np.where(np.isfinite(score), score, np.inf))), score
