"""SLAM's forward model: model spectra and their analytic label derivatives, as pure functions.

In standardised units, pixel ``j`` of the model spectrum at labels ``theta``
is the SVR kernel expansion

.. math::  f_j(\\theta) = \\sum_i \\beta_{ij} \\exp(-\\gamma_j |\\theta - x_i|^2) + b_j,

with ``x_i`` the standardised training labels (Li 2021 sec. 2.2).  Pixels that
share a ``gamma`` share the kernel row, so they are evaluated together by one
matrix product per group.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..svr import squared_distances

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
        # a run of consecutive pixels (e.g. all of them) is a view, not a copy
        rows = dual_coef[pix[0]:pix[-1] + 1] if pix[-1] - pix[0] + 1 == pix.size else dual_coef[pix]
        sv = np.flatnonzero(np.any(rows != 0, axis=0))
        sv = sv if sv.size < SPARSE_SUPPORT * n_train else None
        coef = rows if sv is None else rows[:, sv]
        groups.append((float(g), pix, np.ascontiguousarray(coef.T, dtype=dtype), intercept[pix], sv))
    return groups


#: Rows of ``theta`` per block in :func:`model_flux`: keeps the kernel rows and the
#: stacked products of one block in cache, however many spectra a call carries.
ROW_BLOCK = 128


def model_flux(theta: np.ndarray, X_train: np.ndarray, groups: list[PixelGroup], n_pix: int,
               jacobian: bool = False, values: bool = True,
               K: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
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
    K : (m, G * n_train) array, optional
        :func:`kernel_rows` of ``theta`` for the groups' widths in order, if already
        known (the same numbers as computed here, bit for bit).

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
    n = Xt.shape[0]
    Xsv = [Xt if grp[4] is None else Xt[grp[4]] for grp in groups]     # each group's support stars
    Xd, svd = Xt, [grp[4] for grp in groups]                           # distances to Xd, columns svd
    if K is None and groups and all(sv is not None for sv in svd):     # distances to the support stars only
        cols = np.unique(np.concatenate(svd))
        Xd, svd = Xt[cols], [np.searchsorted(cols, sv) for sv in svd]
    for lo in range(0, m, ROW_BLOCK):
        rows = slice(lo, min(lo + ROW_BLOCK, m))
        th = theta[rows]
        if K is None:
            d2 = squared_distances(th, Xd)
        for gi, ((g, pix, BT, b, _), Xg, sv) in enumerate(zip(groups, Xsv, svd, strict=True)):
            if K is None:                                    # (block, n_s), = rbf_kernel(th, Xg, g)
                k = np.exp(np.multiply(d2 if sv is None else d2[:, sv], -g))
            else:                                            # K's columns are all n training stars
                k = K[rows, gi * n:(gi + 1) * n]
                k = k if sv is None else k[:, sv]
            Fb = F[rows] if values or not jacobian else None
            Jb = J[rows] if jacobian else None
            cols = _columns(pix)
            if BT.dtype == np.float32:
                _model_flux32(th, Xg, g, k, BT, b, cols, Fb, Jb)
            else:
                _model_flux64(th, Xg, g, k, BT, b, cols, F[rows], Jb)
    return F, J


def _columns(pix: np.ndarray) -> np.ndarray | slice:
    """A group's pixel indices as a slice where they are a run (a view to write into), else as they are."""
    return slice(int(pix[0]), int(pix[-1]) + 1) if pix.size and pix[-1] - pix[0] + 1 == pix.size else pix


def _model_flux64(theta, Xt, g, k, BT, b, pix, F, J) -> None:
    """One pixel group and row block of :func:`model_flux` in float64 (fills ``F`` and ``J`` in place)."""
    if J is None:
        if isinstance(pix, slice):                       # the product straight into F: no temporary
            Fp = F[:, pix]
            np.matmul(k, BT, out=Fp)
            Fp += b
        else:
            F[:, pix] = k @ BT + b
        return
    L = theta.shape[1]
    # d k(theta, x_i) / d theta_l = -2 gamma (theta_l - x_il) k: one stacked product
    stack = np.concatenate([k[None], k[None] * Xt.T[:, None, :]], axis=0)   # (1+L, m, n_train)
    prod = (stack.reshape(stack.shape[0] * stack.shape[1], Xt.shape[0]) @ BT).reshape(1 + L, k.shape[0], -1)
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
    XtT, diff = np.ascontiguousarray(Xt.T), np.empty(k.shape)
    for li in range(L):                                  # k (theta_l - x_il): no difference of large terms
        np.subtract(theta[:, li, None], XtT[li], out=diff)
        np.multiply(k, diff, out=stack[v + li], casting="same_kind")    # in float64, rounded once
    prod = (stack.reshape(stack.shape[0] * stack.shape[1], Xt.shape[0]) @ BT).reshape(v + L, k.shape[0], -1)
    if v:
        F[:, pix] = prod[0] + b
    J[:, pix, :] = np.multiply(prod[v:], -2.0 * g).transpose(1, 2, 0)     # (m, n_g, L) in one copy


class ProjectedModel(NamedTuple):
    """The forward model projected onto ``r`` spectral basis vectors (:func:`project`), flux units.

    ``F_r(theta) = offset + (sum_g k_g(theta) @ coef_g) @ basis`` with ``k_g`` the kernel
    row of width ``gammas[g]`` against the training labels; ``coef`` stacks the groups' blocks.
    """

    gammas: np.ndarray       #: (G,) RBF widths of the pixel groups
    coef: np.ndarray         #: (G * n_train, r) basis coefficients per kernel column (float64)
    coef_jac: np.ndarray     #: (G * n_train, r) ``-2 gamma_g coef_g``, in the Jacobian's dtype
    basis: np.ndarray        #: (r, n_pix) basis spectra (float64)
    basis_jac: np.ndarray    #: (r, n_pix) the same in the Jacobian's dtype
    offset: np.ndarray       #: (n_pix,) flux
    residual_chi2: float     #: mean chi2 of ``F - F_r`` over the spectra the basis was made from


def project(groups: list[PixelGroup], flux_mean: np.ndarray, flux_scale: np.ndarray, grid_flux: np.ndarray,
            sigma: np.ndarray, rank: int, jac_dtype: type = np.float64,
            n_train: int | None = None) -> ProjectedModel:
    """The forward model projected onto the ``rank`` leading principal spectra of ``grid_flux``.

    The basis is the leading right singular vectors of ``(grid_flux - mean) / sigma``: a
    model spectrum is replaced by its least-squares projection in the metric of the model's
    own error ``sigma``, ``F_r = Fbar + ((F - Fbar) Q) P`` with ``Q = V_r / sigma`` and
    ``P = sigma V_r^T`` (rows of ``V_r^T`` orthonormal), and ``F = flux_mean + flux_scale
    (sum_g k_g B_g + b)``, so ``k_g`` multiplies ``coef_g = B_g (flux_scale Q)[pix_g]`` of
    shape (n_train, r) instead of B_g (n_train, n_g): the kernel products cost
    ``(G n_train + n_pix) r`` instead of ``n_train n_pix`` per spectrum.

    Parameters
    ----------
    groups : list of PixelGroup
        From :func:`pixel_groups` (float64).
    flux_mean, flux_scale : (n_pix,) arrays
        Standardisation of the flux (flux units).
    grid_flux : (n_grid, n_pix) array
        Model spectra spanning the label domain (the training labels' start grid), flux.
    sigma : (n_pix,) array
        Model error per pixel (flux; e.g. the square root of the CV-MSE), > 0.
    rank : int
        Number of basis spectra ``r`` (1 .. min(n_grid, n_pix)).
    jac_dtype : numpy float type
        Precision of the Jacobian's products (``np.float32`` with ``lm_float32``).
    n_train : int, optional
        Number of training stars; needed when every group has sparse support.

    Returns
    -------
    ProjectedModel
        With ``residual_chi2``, the mean over ``grid_flux`` of ``sum_j ((F_j - F_r,j) / sigma_j)^2``.

    Raises
    ------
    ValueError
        ``rank`` out of range.
    """
    n_grid, n_pix = grid_flux.shape
    if not 1 <= int(rank) <= min(n_grid, n_pix):
        raise ValueError(f"lm_rank={rank}: must be between 1 and {min(n_grid, n_pix)} "
                         f"(training stars x pixels of the model)")
    r = int(rank)
    fbar = grid_flux.mean(axis=0)
    _, s, vt = np.linalg.svd((grid_flux - fbar) / sigma, full_matrices=False)
    Q = vt[:r].T / sigma[:, None]                                    # (n_pix, r)
    P = vt[:r] * sigma[None, :]                                      # (r, n_pix)
    b = np.empty(n_pix)
    coef, gammas = [], []
    n_train = n_train if n_train is not None else next(grp[2].shape[0] for grp in groups if grp[4] is None)
    for g, pix, BT, bg, sv in groups:
        if sv is not None:                               # a sparse group: its coefficients on all stars
            full = np.zeros((n_train, BT.shape[1]), BT.dtype)
            full[sv] = BT
            BT = full
        coef.append(BT @ (flux_scale[pix, None] * Q[pix]))
        b[pix] = bg
        gammas.append(g)
    coef = np.vstack(coef)
    cj = np.vstack([-2.0 * g * coef[i * n_train:(i + 1) * n_train] for i, g in enumerate(gammas)])
    offset = fbar + ((flux_mean + flux_scale * b - fbar) @ Q) @ P
    return ProjectedModel(np.asarray(gammas), coef, cj.astype(jac_dtype), P, P.astype(jac_dtype), offset,
                          float((s[r:] ** 2).sum() / n_grid))


def kernel_rows(theta: np.ndarray, X_train: np.ndarray, gammas: np.ndarray) -> np.ndarray:
    """RBF kernel rows of ``theta`` (m, L) against ``X_train`` for each width, side by side: (m, G * n_train)."""
    d2 = squared_distances(theta, X_train)
    if len(gammas) == 1:                                 # in place: the same numbers, no copies
        np.multiply(d2, -float(gammas[0]), out=d2)
        return np.exp(d2, out=d2)
    return np.concatenate([np.exp(np.multiply(d2, -g)) for g in gammas], axis=1)


def projected_flux(theta: np.ndarray, X_train: np.ndarray, pm: ProjectedModel, jacobian: bool = False,
                   values: bool = True, K: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Model flux of the projected model (:func:`project`) and optionally its label derivatives.

    Parameters
    ----------
    theta : (m, L) array
        Standardised labels.
    X_train : (n_train, L) array
        Standardised training labels.
    pm : ProjectedModel
    jacobian, values : bool
        Which of ``F`` and ``J`` to compute.
    K : (m, G * n_train) array, optional
        :func:`kernel_rows` of ``theta``, if already known.

    Returns
    -------
    F : (m, n_pix) float64 array or None
        Flux (not standardised).
    J : (m, n_pix, L) float64 array or None
        ``d F / d theta`` (flux per standardised label unit).
    """
    theta = np.asarray(theta, float)
    m, L = theta.shape
    n_pix = pm.basis.shape[1]
    F = np.empty((m, n_pix)) if values else None
    J = np.empty((m, n_pix, L)) if jacobian else None
    G = len(pm.gammas)
    for lo in range(0, m, ROW_BLOCK):
        rows = slice(lo, min(lo + ROW_BLOCK, m))
        th = theta[rows]
        k = kernel_rows(th, X_train, pm.gammas) if K is None else K[rows]
        if values:
            F[rows] = (k @ pm.coef) @ pm.basis + pm.offset
        if jacobian:
            stack = np.empty((L,) + k.shape, pm.coef_jac.dtype)
            for li in range(L):                              # k (theta_l - x_il), every width side by side
                stack[li] = k * np.tile(th[:, li, None] - X_train[None, :, li], G)
            prod = ((stack.reshape(-1, k.shape[1]) @ pm.coef_jac) @ pm.basis_jac).reshape(L, k.shape[0], n_pix)
            for li in range(L):
                J[rows, :, li] = prod[li]
    return F, J


def _rbf_curvature(theta: np.ndarray, Xs: np.ndarray, gamma: float, ck: np.ndarray) -> np.ndarray:
    """``sum_i ck_i d^2 k_i / k_i`` per row: (m, L, L), ``ck`` (m, n_s) = coefficient x kernel row.

    ``d^2 exp(-g |t - x_i|^2) / dt_l dt_k = k_i (4 g^2 d_il d_ik - 2 g delta_lk)``, ``d_i = t - x_i``.
    """
    m, L = theta.shape
    out = np.empty((m, L, L))
    d = [theta[:, li, None] - Xs[None, :, li] for li in range(L)]
    ckd = [ck * d[li] for li in range(L)]
    tot = ck.sum(axis=1)
    for li in range(L):
        for lk in range(li, L):
            v = 4.0 * gamma * gamma * np.einsum("ij,ij->i", ckd[li], d[lk])
            if li == lk:
                v -= 2.0 * gamma * tot
            out[:, li, lk] = out[:, lk, li] = v
    return out


def residual_curvature(theta: np.ndarray, X_train: np.ndarray, groups: list[PixelGroup], flux_scale: np.ndarray,
                       u: np.ndarray, K: np.ndarray | None = None) -> np.ndarray:
    """``R = sum_j u_j d^2 F_j / d theta^2`` of the model flux ``F`` (flux units): (m, L, L).

    With ``u = w r`` (weights times residuals) the Hessian of ``chi2 / 2`` is
    ``J^T W J - R``: ``R`` is the term Gauss-Newton leaves out.  It is contracted over
    the pixels first, ``c_i = sum_j u_j s_j beta_ij`` (one product of the size of a model
    evaluation), then over the training stars with the RBF's second derivatives.

    Parameters
    ----------
    theta : (m, L) array
        Standardised labels.
    X_train : (n_train, L) array
        Standardised training labels.
    groups : list of PixelGroup
        From :func:`pixel_groups` (float64).
    flux_scale : (n_pix,) array
        Flux per standardised flux unit.
    u : (m, n_pix) array
        Weights times residuals (flux^-1).
    K : (m, G * n_train) array, optional
        :func:`kernel_rows` of ``theta`` for the groups' widths in order.

    Returns
    -------
    (m, L, L) float64 array, flux^-1 x flux per standardised label unit squared (chi2 units).
    """
    theta = np.asarray(theta, float)
    Xt = np.asarray(X_train, float)
    n = Xt.shape[0]
    if K is None:
        K = kernel_rows(theta, Xt, np.array([grp[0] for grp in groups]))
    out = np.zeros((theta.shape[0], theta.shape[1], theta.shape[1]))
    for gi, (g, pix, BT, _, sv) in enumerate(groups):
        k = K[:, gi * n:(gi + 1) * n]
        k, Xs = (k, Xt) if sv is None else (k[:, sv], Xt[sv])
        c = (u[:, pix] * flux_scale[pix]) @ np.asarray(BT, float).T          # (m, n_s)
        out += _rbf_curvature(theta, Xs, g, c * k)
    return out


def projected_residual_curvature(theta: np.ndarray, X_train: np.ndarray, pm: ProjectedModel, u: np.ndarray,
                                 K: np.ndarray | None = None) -> np.ndarray:
    """:func:`residual_curvature` of the projected model (:func:`project`): (m, L, L).

    ``c = (u @ basis^T) @ coef^T`` costs ``(n_pix + G n_train) r`` per spectrum.
    """
    theta = np.asarray(theta, float)
    n = X_train.shape[0]
    if K is None:
        K = kernel_rows(theta, X_train, pm.gammas)
    c = (u @ pm.basis.T) @ pm.coef.T                                       # (m, G * n_train)
    out = np.zeros((theta.shape[0], theta.shape[1], theta.shape[1]))
    for gi, g in enumerate(pm.gammas):
        cols = slice(gi * n, (gi + 1) * n)
        out += _rbf_curvature(theta, X_train, float(g), c[:, cols] * K[:, cols])
    return out
