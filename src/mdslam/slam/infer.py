"""Labels of spectra from a fitted SLAM model: quick-grid start, batched LM, posterior.

The functions take the fitted model (:class:`mdslam.slam.SLAM`) and read its
state; the only thing they write is the model's prediction cache (the quick
grid, the prior).  Labels are found in standardised label space and returned
in physical units:

1. weights ``1 / (sigma_obs^2 + CV-MSE_j)`` (:func:`mdslam.slam.inputs.weights`), or with
   ``likelihood="correlated"`` the whitening of :mod:`mdslam.slam.noise` (:func:`whitener`);
2. start at the best point of a label grid (:func:`quick_grid`, :func:`mdslam.slam.lm.grid_start`);
3. Levenberg-Marquardt to the maximum likelihood of Li 2021 eq. 3 (:func:`lm_batch`);
4. with a prior, the MAP and posterior moments of Li eq. 2 (:func:`posterior_batch`);
5. flags (:mod:`mdslam.slam.quality`).

Spectra go in batches of ``batch_size`` to ``n_jobs`` threads, BLAS single-threaded.
"""

from __future__ import annotations

import contextlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..flags import LabelFlag
from . import forward, inputs, lm, noise, posterior, quality
from ._util import _n_workers, _progress, one_blas_thread


def physical(model: Any, theta: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardised labels (m, L) and covariances (m, L, L) -> physical labels and standard deviations (m, L)."""
    with np.errstate(invalid="ignore"):
        return (model.label_mean_ + theta * model.label_scale_,
                np.sqrt(np.diagonal(cov, axis1=1, axis2=2)) * model.label_scale_)


def quick_grid(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """Starting points of LM and their model spectra (cached on the model).

    Returns
    -------
    labels : (m, L) array
        Standardised: the training labels, plus a regular ``quick_grid**L``
        grid over their range when ``quick_grid`` is set.
    flux : (m, n_pix) array
        Model flux at those labels (normalised flux units); at the training
        labels :func:`start_flux`, i.e. the fitted model's ``quick_flux_``.
    """
    cache = model._cache if hasattr(model, "_cache") else {}
    if "quick" not in cache:
        pts, flux = [model.X_train_], [start_flux(model)]
        if model.quick_grid:
            k = int(model.quick_grid)
            lo, hi = model.X_train_.min(axis=0), model.X_train_.max(axis=0)
            axes = [np.linspace(a, b, k) for a, b in zip(lo, hi, strict=True)]
            mesh = np.meshgrid(*axes, indexing="ij")
            pts.append(np.column_stack([m.ravel() for m in mesh]))
            flux.append(model.flux_mean_ + model._model_scaled(pts[-1])[0] * model.flux_scale_)
        # without the regular grid, the training labels and the stored start flux as they are (read
        # only here; two ~1 MB copies per fresh model were ~7 % of labelling 20 spectra on 150 px)
        grid = pts[0] if len(pts) == 1 else np.vstack(pts)
        cache["quick"] = (grid, np.asarray(flux[0] if len(flux) == 1 else np.vstack(flux), float))
        model._cache = cache
    return cache["quick"]


def start_flux(model: Any) -> np.ndarray:
    """Model flux at the training labels: the grid that starts LM.

    The fitted model keeps it as ``quick_flux_`` and its file stores it, so a freshly
    loaded model does not evaluate the forward model at every training label (for
    800 stars x 150 px this was ~30 ms, most of labelling 20 spectra).  It is kept in
    float64, so that labels are bit-identical to evaluating the grid at labelling time;
    rounded to float32 it can change the ranking of the starting points (chi2 of a
    spectrum at each training label) where two are within ~1e-4, which moved labels by up
    to 1e-3 of their formal errors.

    Returns
    -------
    (n_train, n_pix) float64 array, normalised flux.
    """
    stored = getattr(model, "quick_flux_", None)
    if stored is not None and stored.shape == (model.X_train_.shape[0], model.n_features_in_):
        return np.asarray(stored, float)
    return model.flux_mean_ + model._model_scaled(model.X_train_)[0] * model.flux_scale_


def check_lm_options(model: Any) -> None:
    """Raise a one-line ValueError for an ``lm_damping`` or ``lm_rank`` that LM cannot use (before any batch runs)."""
    damping = getattr(model, "lm_damping", "fixed")
    if damping not in ("fixed", "nielsen"):
        raise ValueError(f"lm_damping={damping!r}: must be 'fixed' or 'nielsen'")
    rank = getattr(model, "lm_rank", None)
    if rank is not None:
        n_max = min(model.X_train_.shape[0], model.n_features_in_)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= n_max:
            raise ValueError(f"lm_rank={rank!r}: must be None or between 1 and {n_max} "
                             "(training stars x pixels of the model)")


def _lm_dtype(model: Any) -> type:
    """Precision of the kernel products inside LM: float32 when ``lm_float32`` is set."""
    return np.float32 if getattr(model, "lm_float32", False) else np.float64


def _model_fn(model: Any, dtype: type = np.float64) -> lm.ModelFn:
    """``theta (k, L) standardised -> (flux (k, n_pix), d flux / d theta (k, n_pix, L))``, flux units."""
    scale, mean = model.flux_scale_, model.flux_mean_

    def fn(th):
        F, J = model._model_scaled(th, jacobian=True, dtype=dtype)
        return mean + F * scale, J * scale[None, :, None]

    return fn


def _split_fns(model: Any, dtype: type) -> tuple:
    """(values, jacobian, curvature) of the model in flux units for :func:`mdslam.slam.lm.levenberg_marquardt`.

    The values (hence chi2 and the acceptance of LM steps) are always float64;
    ``dtype`` sets the precision of the Jacobian's kernel products.  ``values`` keeps the
    kernel rows of its last call and ``jacobian`` and ``curvature`` (called with rows of that
    call's labels, the accepted trial points) reuse them: the same numbers, computed once.
    """
    scale, mean, X = model.flux_scale_, model.flux_mean_, model.X_train_
    gammas = np.array([g[0] for g in model._groups()])
    last: dict[str, np.ndarray] = {}

    def values(th):
        last["th"], last["K"] = th, forward.kernel_rows(th, X, gammas)
        F = forward.model_flux(th, X, model._groups(), model.n_features_in_, K=last["K"])[0]
        F *= scale                                       # mean + F * scale, in place
        F += mean
        return F

    def jacobian(th):
        J = forward.model_flux(th, X, model._groups(dtype), model.n_features_in_, jacobian=True, values=False,
                               K=_kernel_of(last, th))[1]
        J *= scale[None, :, None]
        return J

    def curvature(th, u):
        return forward.residual_curvature(th, X, model._groups(), scale, u, K=_kernel_of(last, th))

    return values, jacobian, curvature


def projected(model: Any, dtype: type = np.float64) -> forward.ProjectedModel:
    """The forward model projected onto ``lm_rank`` principal spectra (:func:`mdslam.slam.forward.project`), cached.

    The basis comes from the start grid (:func:`start_flux`, the model at every training
    label) in the metric of the model's own error (the square root of :func:`model_variance`;
    pixels without a positive finite one get the median), so the projection error of a model
    spectrum is measured in units of that error (``ProjectedModel.residual_chi2``).
    """
    cache = model.__dict__.setdefault("_cache", {})
    key = ("projected", int(model.lm_rank), np.dtype(dtype).name)
    if key not in cache:
        var = np.asarray(model_variance(model), float)
        good = np.isfinite(var) & (var > 0)
        sigma = np.sqrt(np.where(good, var, np.median(var[good]) if good.any() else 1.0))
        cache[key] = forward.project(model._groups(), model.flux_mean_, model.flux_scale_, start_flux(model),
                                     sigma, model.lm_rank, dtype, n_train=len(model.X_train_))
    return cache[key]


def _projected_fns(model: Any, dtype: type) -> tuple:
    """(values, jacobian, curvature) of the projected model (:func:`projected`) for LM, flux units.

    ``values`` keeps the kernel rows of its last call; ``jacobian`` and ``curvature``, called with
    rows of that call's labels (the accepted trial points), reuse them instead of recomputing the kernel.
    """
    pm, X = projected(model, dtype), model.X_train_
    last: dict[str, np.ndarray] = {}

    def values(th):
        last["th"], last["K"] = th, forward.kernel_rows(th, X, pm.gammas)
        return forward.projected_flux(th, X, pm, K=last["K"])[0]

    def jacobian(th):
        return forward.projected_flux(th, X, pm, jacobian=True, values=False, K=_kernel_of(last, th))[1]

    def curvature(th, u):
        return forward.projected_residual_curvature(th, X, pm, u, K=_kernel_of(last, th))

    return values, jacobian, curvature


def _kernel_of(last: dict, th: np.ndarray) -> np.ndarray | None:
    """Kernel rows of ``th`` (m, L) taken from the last ``values`` call, None if a row is not there."""
    prev = last.get("th")
    if prev is None or prev.shape[1] != th.shape[1]:
        return None
    if th is prev or (th.shape == prev.shape and np.array_equal(th, prev)):
        return last["K"]
    where = {row.tobytes(): i for i, row in enumerate(prev)}
    idx = [where.get(row.tobytes(), -1) for row in np.ascontiguousarray(th)]
    return None if min(idx, default=0) < 0 else last["K"][idx]


def model_variance(model: Any) -> np.ndarray:
    """Diagonal model variance of the likelihood (n_pix,), flux^2.

    ``likelihood="independent"``: the CV-MSE of Li 2021 eq. 3.  ``"correlated"``:
    the diagonal ``d`` of the factor model of the CV residuals
    (:mod:`mdslam.slam.noise`), the factors entering through :func:`whitener`.
    """
    if getattr(model, "likelihood", "independent") == "correlated":
        if getattr(model, "noise_diag_", None) is None:
            raise ValueError("likelihood='correlated' but this model was fitted without a noise model: "
                             "refit it with likelihood='correlated'")
        return model.noise_diag_
    return model.cv_mse_


def whitener(model: Any, w: np.ndarray) -> noise.Whitener | None:
    """The whitening of a batch (:class:`mdslam.slam.noise.Whitener`), None for the independent likelihood.

    Parameters
    ----------
    model : SLAM
    w : (m, n_pix) array
        Diagonal weights ``1 / (model_variance + 1/ivar)`` (0 = masked).
    """
    if getattr(model, "likelihood", "independent") != "correlated":
        return None
    return noise.Whitener(w, model.noise_factor_)


def lm_weights(w: np.ndarray, wh: noise.Whitener | None) -> np.ndarray:
    """LM's weights: ``w`` itself, or with a whitener (which holds ``w``) 1 on good pixels and 0 on masked ones."""
    return w if wh is None else (w > 0).astype(float)


def lm_batch(model: Any, fobs: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Batched Levenberg-Marquardt (:mod:`mdslam.slam.lm`) in standardised label space.

    With ``lm_rank`` set, LM first runs on the projected model (:func:`projected`) and then
    on the full model from where it stopped, so the labels, chi2, covariance and convergence
    are those of the full model; ``n_iter`` counts both runs, together at most ``lm_max_iter``.
    With ``lm_newton`` too, the Newton steps are the projected stage's: the full-model stage
    starts at the projected optimum and takes Gauss-Newton steps (mostly none), which saves
    the curvature term (a product of the size of a model evaluation) of every spectrum at its start.

    Parameters
    ----------
    model : SLAM
        A fitted model.
    fobs, w : (m, n_pix) arrays
        Observed flux (0 where masked) and diagonal weights (flux^-2); with
        ``likelihood="correlated"`` the residuals are whitened (:func:`whitener`).

    Returns
    -------
    theta (m, L) scaled, cov (m, L, L) scaled, chi2 (m,), n_iter (m,),
    converged (m,), failed (m,).
    """
    G, FG = quick_grid(model)
    wh = whitener(model, w)
    i0 = lm.grid_index(fobs, w, FG, whiten=wh)
    theta0, f0 = G[i0], FG[i0]                       # the start and the model there (the grid's flux)
    wl = lm_weights(w, wh)
    dtype = _lm_dtype(model)
    n_first = np.zeros(fobs.shape[0], int)
    if getattr(model, "lm_rank", None) is not None:
        first = _run_lm(model, _projected_fns(model, dtype), fobs, wl, theta0, wh, model.lm_max_iter)
        theta0 = np.where(np.isfinite(first.theta), first.theta, theta0)    # a failed row restarts at its grid start
        n_first, f0 = first.n_iter, None
    split = None if dtype == np.float64 else _split_fns(model, dtype)   # float32: the Jacobian only
    r = _run_lm(model, split, fobs, wl, theta0, wh, model.lm_max_iter - n_first,
                newton=getattr(model, "lm_rank", None) is None, f0=f0)
    return tuple(r._replace(n_iter=r.n_iter + n_first))


def _run_lm(model: Any, split: tuple | None, fobs: np.ndarray, wl: np.ndarray, theta0: np.ndarray,
            wh: noise.Whitener | None, max_iter, newton: bool = True, f0: np.ndarray | None = None) -> lm.LMResult:
    """:func:`mdslam.slam.lm.levenberg_marquardt` with the model's LM settings.

    ``split``: (values, jacobian, curvature) of :func:`_split_fns` or :func:`_projected_fns`; None: the
    float64 model.  The curvature (Newton steps) only with ``newton``, ``lm_newton`` and the independent
    likelihood.  ``f0``: the model flux at ``theta0`` if known (LM's ``f0``).
    """
    fn = _model_fn(model) if split is None else (lambda th: (split[0](th), split[1](th)))
    curvature = None
    if newton and getattr(model, "lm_newton", False) and wh is None:
        curvature = split[2] if split is not None else (
            lambda th, u: forward.residual_curvature(th, model.X_train_, model._groups(), model.flux_scale_, u))
    return lm.levenberg_marquardt(fn, fobs, wl, theta0, max_iter=max_iter, xtol=model.lm_xtol,
                                  ftol=model.lm_ftol, split=None if split is None else split[:2],
                                  sigma_tol=getattr(model, "lm_sigma_tol", None), whiten=wh,
                                  damping=getattr(model, "lm_damping", "fixed"), curvature=curvature, f0=f0)


def lm_one_by_one(model: Any, fobs: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """:func:`lm_batch` one spectrum at a time; a spectrum whose fit raises is marked failed.

    Returns
    -------
    As :func:`lm_batch`.
    """
    m, L = fobs.shape[0], model.label_mean_.size
    th = np.full((m, L), np.nan)
    cov = np.full((m, L, L), np.nan)
    c2 = np.full(m, np.nan)
    nit = np.zeros(m, int)
    conv = np.zeros(m, bool)
    failed = np.ones(m, bool)
    for i in range(m):
        try:
            o = lm_batch(model, fobs[i:i + 1], w[i:i + 1])
        except Exception:  # noqa: BLE001 - a failed spectrum is flagged, not raised
            continue
        th[i], cov[i], c2[i], nit[i], conv[i], failed[i] = (o[0][0], o[1][0], o[2][0], o[3][0],
                                                            o[4][0], o[5][0])
    return th, cov, c2, nit, conv, failed


def prior(model: Any) -> posterior.Prior:
    """The model's prior in standardised label units (cached on the model)."""
    cache = model.__dict__.setdefault("_cache", {})
    if "prior" not in cache:
        cache["prior"] = posterior.make_prior(model.prior, model.X_train_, model.label_mean_, model.label_scale_)
    return cache["prior"]


def likelihood_scale(model: Any) -> float:
    """``s`` of the likelihood ``exp(-chi2 / 2s)``: ``chi2_scale`` or the CV choice of ``fit``.

    Raises
    ------
    ValueError
        ``chi2_scale="cv"`` on a model fitted without a prior (no CV choice was made).
    """
    if model.chi2_scale != "cv":
        return float(model.chi2_scale)
    if getattr(model, "chi2_scale_cv_", None) is None:
        raise ValueError("chi2_scale='cv' but this model chose no chi2 scale (it was fitted without a "
                         "prior): refit with the prior set, or give chi2_scale a number")
    return float(model.chi2_scale_)


def posterior_batch(model: Any, fobs: np.ndarray, w: np.ndarray, theta_ml: np.ndarray,
                    chi2_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MAP, posterior mean and covariance of a batch (standardised labels).

    Parameters
    ----------
    model : SLAM
        A fitted model with a prior.
    fobs, w : (m, n_pix) arrays
        Observed flux (0 where masked) and diagonal likelihood weights (as for :func:`lm_batch`).
    theta_ml : (m, L) array
        Maximum-likelihood labels (start of the MAP search).
    chi2_scale : float

    Returns
    -------
    theta_map (m, L), mean (m, L), cov (m, L, L), n_eff (m,).  The mean is the
    importance-sampling estimate of :func:`mdslam.slam.posterior.posterior_moments`;
    the covariance is the Laplace one where fewer than
    :data:`mdslam.slam.posterior.MIN_N_EFF` nodes carry the weight.
    """
    pr = prior(model)
    scale, mean = model.flux_scale_, model.flux_mean_

    dtype = _lm_dtype(model)

    def flux(th):
        return mean + model._model_scaled(th, dtype=dtype)[0] * scale

    start = np.where(np.isfinite(theta_ml), theta_ml, 0.0)
    start = np.clip(start, pr.lo, pr.hi)
    wh = whitener(model, w)
    wl = lm_weights(w, wh)
    r = posterior.map_estimate(_model_fn(model, dtype), fobs, wl, start, pr, chi2_scale, whiten=wh,
                               max_iter=model.lm_max_iter, xtol=model.lm_xtol, ftol=model.lm_ftol)
    mu, C, ne = posterior.posterior_moments(flux, fobs, wl, r.theta, r.cov, pr, chi2_scale, whiten=wh)
    lap = ~(ne >= posterior.MIN_N_EFF)
    C[lap] = r.cov[lap]
    bad = ~np.all(np.isfinite(mu), axis=1)
    mu[bad] = r.theta[bad]
    return r.theta, mu, C, ne


def training_rchi2(model: Any, flux: np.ndarray, good: np.ndarray, ivar: np.ndarray | None) -> np.ndarray:
    """Reduced chi2 of the maximum-likelihood fits of the training spectra (in-sample).

    Parameters
    ----------
    model : SLAM
        The model just fitted on them.
    flux, good : (n_train, n_pix) arrays
        Training fluxes and their good-pixel mask.
    ivar : (n_train, n_pix) array or None

    Returns
    -------
    (n_train,) array; NaN where too few pixels are good.

    Notes
    -----
    With ``n_jobs`` > 1 the spectra go in batches (``batch_size``, at most an ``n_jobs``-th of
    them) to ``n_jobs`` threads, as in :meth:`~mdslam.slam.SLAM.predict`; with one job, in
    one batch.
    """
    check_lm_options(model)
    X = np.where(good, flux, np.nan)
    w = inputs.weights(X, None if ivar is None else np.asarray(ivar, float), model_variance(model),
                       model.pixel_usable_)
    fobs = np.where(w > 0, X, 0.0)
    n_good = (w > 0).sum(axis=1)
    L = model.label_mean_.size
    out = np.full(X.shape[0], np.nan)
    ok = n_good > L
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return out
    nw = _n_workers(model.n_jobs)
    # one batch on one thread; with n_jobs > 1 batches of at most batch_size on n_jobs threads, as predict
    bs = idx.size if nw == 1 else max(1, min(int(model.batch_size), -(-idx.size // nw)))
    batches = [idx[i:i + bs] for i in range(0, idx.size, bs)]
    with one_blas_thread():
        quick_grid(model)                            # the shared caches, built before the threads start
        if getattr(model, "lm_rank", None) is not None:
            projected(model, _lm_dtype(model))
        workers = max(1, min(nw, len(batches)))
        with ThreadPoolExecutor(max_workers=workers) if workers > 1 else contextlib.nullcontext() as ex:
            run = (lambda bidx: lm_batch(model, fobs[bidx], w[bidx])[2])       # noqa: E731
            for bidx, c2 in zip(batches, map(run, batches) if ex is None else ex.map(run, batches), strict=True):
                out[bidx] = quality.rchi2(c2, n_good[bidx], L)
    return out


def infer(model: Any, X: Any, ivar: Any = None, snr: Any = None) -> dict[str, Any]:
    """Labels, uncertainties, fit diagnostics and flags of spectra.

    Parameters
    ----------
    model : SLAM
        A fitted model.
    X, ivar : as for :meth:`mdslam.slam.SLAM.predict`.
    snr : (n,) array, optional
        Default: :func:`mdslam.slam.quality.snr` over the good pixels.

    Returns
    -------
    dict with ``labels`` (n, L) headline (posterior mean with a prior, else
    ML), ``ml`` and ``e_formal`` (n, L), ``chi2``, ``n_good``, ``n_iter``,
    ``converged``, ``flag``, ``snr``, ``n_eff`` (n,) and ``posterior`` (dict
    of ``map``, ``mean``, ``std`` (n, L), or None without a prior).

    Notes
    -----
    Every flag, the ``OUTSIDE_DOMAIN`` bits included, comes from the
    maximum-likelihood labels of Li 2021 eq. 3, also when a prior makes the
    posterior mean of eq. 2 the headline: the likelihood alone says where
    the spectrum lies, while a prior fitted to the training labels pulls a
    star from outside the training domain into it, so a test on the
    posterior mean would pass exactly the stars the flag exists to catch.
    The headline label of an in-domain star is then its posterior mean.
    """
    model._check_fitted()
    check_lm_options(model)
    flux, iv, bad = inputs.coerce_spectra(X, ivar, model.n_features_in_)
    n = flux.shape[0]
    L = model.label_mean_.size
    w = inputs.weights(flux, iv, model_variance(model), model.pixel_usable_)
    w[bad] = 0.0
    fobs = np.where(w > 0, flux, 0.0)
    n_good = (w > 0).sum(axis=1)
    if snr is None:
        snr = quality.snr(flux, w > 0, iv)
    snr = np.asarray(snr, float).ravel()
    if snr.size != n:
        raise ValueError(f"snr has {snr.size} entries for {n} spectra")
    fittable = (~bad) & (n_good > L)
    flag = quality.input_flags(fittable, n_good, snr, low_snr=model.low_snr,
                               min_good=model.min_good_fraction * int(model.pixel_usable_.sum()))
    res = _fit_all(model, fobs, w, np.flatnonzero(fittable), snr, flag)
    has_prior = model.prior is not None
    headline = res["post"]["mean"] if has_prior else res["labels"]
    # where the spectrum lies is the likelihood's answer (ML labels), not the prior's (see docstring)
    flag |= quality.domain_flags(res["labels"], model.domain_array())
    flag |= quality.fit_quality_flags(model, res["chi2"], n_good, res["labels"], flux)    # mdslam.checks
    return dict(labels=headline, ml=res["labels"], e_formal=res["e_formal"], chi2=res["chi2"], n_good=n_good,
                n_iter=res["n_iter"], converged=res["converged"], flag=flag, snr=snr,
                posterior=res["post"] if has_prior else None, n_eff=res["n_eff"])


def _fit_all(model: Any, fobs: np.ndarray, w: np.ndarray, idx_all: np.ndarray, snr: np.ndarray,
             flag: np.ndarray) -> dict[str, Any]:
    """LM (and posterior) fits of the rows ``idx_all``, in batches on threads; sets bits in ``flag``."""
    n, L = fobs.shape[0], model.label_mean_.size
    out = dict(labels=np.full((n, L), np.nan), e_formal=np.full((n, L), np.nan), chi2=np.full(n, np.nan),
               n_iter=np.zeros(n, int), converged=np.zeros(n, bool), n_eff=np.full(n, np.nan),
               post={k: np.full((n, L), np.nan) for k in ("map", "mean", "std")})
    nw = _n_workers(model.n_jobs)
    bs = max(1, min(int(model.batch_size), -(-idx_all.size // nw)))
    batches = [idx_all[i:i + bs] for i in range(0, idx_all.size, bs)]
    has_prior = model.prior is not None
    s_lik = likelihood_scale(model) if has_prior else 1.0
    post = out["post"]
    # the CV calibration of the std holds for the CV-chosen scale only
    std_scale = (posterior.std_factor(model.posterior_std_scale_, model.posterior_std_snr_ref_, snr)
                 if model.chi2_scale == "cv" and has_prior else np.ones((n, L)))

    def run(bidx):
        try:
            res = lm_batch(model, fobs[bidx], w[bidx])
        except Exception as exc:  # never lose a whole batch: redo one by one
            warnings.warn(f"batch fit failed ({exc!r}); refitting spectra one by one", stacklevel=2)
            res = lm_one_by_one(model, fobs[bidx], w[bidx])
        if not has_prior:
            return res, None
        return res, posterior_batch(model, fobs[bidx], w[bidx], res[0], s_lik)

    with one_blas_thread():
        quick_grid(model)                            # build the shared cache before threads start
        if getattr(model, "lm_rank", None) is not None:
            projected(model, _lm_dtype(model))
        if has_prior:
            prior(model)
        workers = max(1, min(nw, len(batches)))
        with ThreadPoolExecutor(max_workers=workers) if workers > 1 else contextlib.nullcontext() as ex:
            results = map(run, batches) if ex is None else ex.map(run, batches)
            for bidx, res in zip(batches, _progress(results, model.verbose, "SLAM labels", unit="batch",
                                                    total=len(batches)), strict=True):
                (th, cov, c2, nit, conv, failed), pst = res
                if pst is not None:
                    th_map, mu, C, out["n_eff"][bidx] = pst
                    post["map"][bidx] = physical(model, th_map, C)[0]
                    post["mean"][bidx], sd = physical(model, mu, C)
                    post["std"][bidx] = sd * std_scale[bidx]
                    for v in post.values():
                        v[bidx[failed]] = np.nan
                out["labels"][bidx], out["e_formal"][bidx] = physical(model, th, cov)
                out["chi2"][bidx] = c2
                out["n_iter"][bidx] = nit
                out["converged"][bidx] = conv
                flag[bidx[~conv]] |= LabelFlag.NOT_CONVERGED
                flag[bidx[failed]] |= LabelFlag.FAILED
                out["labels"][bidx[failed]] = np.nan
    return out
