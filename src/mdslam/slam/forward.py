"""SLAM's forward model: model spectra and their analytic label derivatives, as pure functions.

In standardised units, pixel ``j`` of the model spectrum at labels ``theta``
is the SVR kernel expansion

.. math::  f_j(\\theta) = \\sum_i \\beta_{ij} \\exp(-\\gamma_j |\\theta - x_i|^2) + b_j,

with ``x_i`` the standardised training labels (Li 2021 sec. 2.2).  Pixels that
share a ``gamma`` share the kernel row, so they are evaluated together by one
matrix product per group.
"""

from __future__ import annotations

import numpy as np

#: One group of pixels with the same RBF width: (gamma, pixel indices (n_g,),
#: transposed dual coefficients (n_s, n_g) of its support stars, intercepts (n_g,),
#: support stars (n_s,) int array, or None for all n_train).
PixelGroup = tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]

#: A group's kernel expansion runs over its support stars only (the training stars with a
#: nonzero coefficient at one of its pixels) when they are fewer than this fraction of the
#: training set: a Nystrom model's coefficients are zero off its landmarks (``SLAM(kernel_rank=m)``,
#: e.g. 371 of 15,000 stars).  Otherwise over all stars, as before (the same bits).
SPARSE_SUPPORT = 0.5


def pixel_groups(gamma: np.ndarray, dual_coef: np.ndarray, intercept: np.ndarray,
                 dtype: type = np.float64) -> list[PixelGroup]:
    """Group pixels by their RBF width for :func:`model_flux`.

    Parameters
    ----------
    gamma : (n_pix,) array
        RBF width per pixel (standardised label units).
    dual_coef : (n_pix, n_train) array
        SVR dual coefficients ``alpha - alpha*``.
    intercept : (n_pix,) array
        SVR intercepts (standardised flux).
    dtype : numpy float type
        Type of the stored dual coefficients: ``np.float32`` makes
        :func:`model_flux` compute its kernel products in single precision.

    Returns
    -------
    list of (gamma, pixel index (n_g,), dual_coef[pix][:, sv].T (n_s, n_g), intercept[pix] (n_g,), sv):
    ``sv`` the support stars (n_s,) when fewer than :data:`SPARSE_SUPPORT` of the training
    stars, else None (all ``n_train`` stars, ``n_s = n_train``).
    """
    groups = []
    n_train = dual_coef.shape[1]
    for g in np.unique(gamma):
        pix = np.flatnonzero(gamma == g)
        sv = np.flatnonzero(np.any(dual_coef[pix] != 0, axis=0))
        sv = sv if sv.size < SPARSE_SUPPORT * n_train else None
        coef = dual_coef[pix] if sv is None else dual_coef[pix][:, sv]
        groups.append((float(g), pix, np.ascontiguousarray(coef.T, dtype=dtype), intercept[pix], sv))
    return groups


#: Rows of ``theta`` per block in :func:`model_flux`: keeps the kernel rows and the
#: stacked products of one block in cache, however many spectra a call carries.
ROW_BLOCK = 128


def model_flux(theta: np.ndarray, X_train: np.ndarray, groups: list[PixelGroup], n_pix: int,
               jacobian: bool = False, values: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Standardised model flux at standardised labels, and optionally its label derivatives.

    Parameters
    ----------
    theta : (m, n_label) array
        Standardised labels.
    X_train : (n_train, n_label) array
        Standardised training labels (the support vectors).
    groups : list of PixelGroup
        From :func:`pixel_groups`.  With float32 dual coefficients the kernel
        products run in float32 (about twice as fast; relative error ~1e-6 of
        the sum of ``|beta_ij k_i|``), the derivatives from ``k (theta - x_i)``
        directly (no cancellation); F and J are returned in float64.
    n_pix : int
        Number of pixels of the model.
    jacobian : bool
        Also return ``d f / d theta``.
    values : bool
        False (with ``jacobian``): the float32 path skips the model flux
        (``F`` is then left unset); the float64 path computes it anyway.

    Returns
    -------
    F : (m, n_pix) array
        Standardised model flux.
    J : (m, n_pix, n_label) array or None
        ``d F / d theta`` (standardised flux per standardised label unit).

    Notes
    -----
    Rows go in blocks of :data:`ROW_BLOCK`; the squared label distances of a
    block are computed once (as in :func:`mdslam.svr.rbf_kernel`, so the
    kernel is the same to the last bit) and shared by all pixel groups; a
    group with sparse support (:data:`SPARSE_SUPPORT`) takes its columns only.
    """
    theta = np.asarray(theta, float)
    m, L = theta.shape
    F = np.empty((m, n_pix))
    J = np.empty((m, n_pix, L)) if jacobian else None
    Xt = np.asarray(X_train, float)
    Xsv = [Xt if grp[4] is None else Xt[grp[4]] for grp in groups]     # each group's support stars
    if groups and all(grp[4] is not None for grp in groups):          # distances to the support stars only
        cols = np.unique(np.concatenate([grp[4] for grp in groups]))
        Xt = Xt[cols]
        groups = [(g, pix, BT, b, np.searchsorted(cols, sv)) for g, pix, BT, b, sv in groups]
    for lo in range(0, m, ROW_BLOCK):
        rows = slice(lo, min(lo + ROW_BLOCK, m))
        th = theta[rows]
        d2 = np.zeros((th.shape[0], Xt.shape[0]))
        for li in range(L):
            diff = th[:, li, None] - Xt[None, :, li]
            d2 += diff * diff
        for (g, pix, BT, b, sv), Xg in zip(groups, Xsv, strict=True):
            k = np.exp(np.multiply(d2 if sv is None else d2[:, sv], -g))   # (block, n_s), = rbf_kernel(th, Xg, g)
            Fb = F[rows] if values or not jacobian else None
            Jb = J[rows] if jacobian else None
            if BT.dtype == np.float32:
                _model_flux32(th, Xg, g, k, BT, b, pix, Fb, Jb)
            else:
                _model_flux64(th, Xg, g, k, BT, b, pix, F[rows], Jb)
    return F, J


def _model_flux64(theta, Xt, g, k, BT, b, pix, F, J) -> None:
    """One pixel group and row block of :func:`model_flux` in float64 (fills ``F`` and ``J`` in place)."""
    if J is None:
        F[:, pix] = k @ BT + b
        return
    L = theta.shape[1]
    # d k(theta, x_i) / d theta_l = -2 gamma (theta_l - x_il) k: one stacked product
    stack = np.concatenate([k[None], k[None] * Xt.T[:, None, :]], axis=0)   # (1+L, m, n_train)
    prod = (stack.reshape(-1, Xt.shape[0]) @ BT).reshape(1 + L, k.shape[0], -1)
    kb = prod[0]
    F[:, pix] = kb + b
    for li in range(L):
        J[:, pix, li] = -2.0 * g * (theta[:, li, None] * kb - prod[1 + li])


def _model_flux32(theta, Xt, g, k, BT, b, pix, F, J) -> None:
    """One pixel group and row block of :func:`model_flux` with float32 products (fills ``F`` and/or ``J``)."""
    if J is None:
        F[:, pix] = k.astype(np.float32) @ BT + b
        return
    L = theta.shape[1]
    v = 0 if F is None else 1                            # rows of the stack for the values
    stack = np.empty((v + L,) + k.shape, np.float32)
    if v:
        stack[0] = k
    for li in range(L):                                  # k (theta_l - x_il): no difference of large terms
        stack[v + li] = k * (theta[:, li, None] - Xt[None, :, li])
    prod = (stack.reshape(-1, Xt.shape[0]) @ BT).reshape(v + L, k.shape[0], -1)
    if v:
        F[:, pix] = prod[0] + b
    for li in range(L):
        J[:, pix, li] = (-2.0 * g) * prod[v + li]
