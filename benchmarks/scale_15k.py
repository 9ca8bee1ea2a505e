"""Training at Li 2021's SLAM_1 scale: 15,000 mock LAMOST stars x 1,596 px, 8-point grid, k-fold CV.

Target: CV grid search + final fits in < 30 min and < 16 GB.  The exact solver needs an
``n x n`` kernel and its eigendecomposition per fold and gamma (1.8 GB and ~10^13 flop at
n = 15,000), so this scale runs the approximate path, ``SLAM(kernel_rank=m)`` (Nystrom
kernel, :func:`mdslam.svr.nystrom_kernel`).

Two modes:

* default (scale): the mock training set (``MockSurvey("lamost", seed=2024)``, the data of
  ``realistic_grid.py``), grid C = (1, 10) x epsilon = (0.03, 0.1) x gamma = (0.3, 1),
  shuffled ``KFold(--folds)``.  ``--n-pix`` trains an evenly spaced subset of the pixels and
  extrapolates: the kernel builds (timed separately, independent of the pixels) plus the
  rest scaled linearly in the number of pixels (pixels are solved independently).  Times are
  CPU seconds of the process (one thread, ``--n-jobs 1``): on a shared machine the wall time
  measures the other jobs as much as this one; the wall time is printed beside it.  The
  reference, the exact path, is timed with the Nystrom path on the first ``--exact-n``
  stars (same pixels, grid, folds, same process) and extrapolated to ``--n-star`` as
  ``t * (n_star / exact_n)^2``: a lower bound (the dense ADMM work per iteration grows as
  n^2; the eigendecompositions grow as n^3 and the iteration counts grow with n too).
  Peak memory is the process's peak resident set size.
* ``--accuracy``: the error of the approximate path against the exact one where exact is
  feasible: ``--exact-n`` stars (80 % training, 20 % test), ``--n-pix`` pixels, the same
  grid, 5-fold CV, both models fitted in full.  Prints the CV-MSE ratio per pixel, the
  fraction of pixels with the same (C, epsilon, gamma), the forward-model difference at the
  test labels relative to the exact CV-MSE, and the label differences on the test spectra
  relative to the exact model's own test errors.

* ``--compare-solvers``: the two solvers of the Nystrom path, ADMM + polish
  (:func:`mdslam.svr.solve_svr_staged`) and dual coordinate descent
  (:func:`mdslam.slam.lowrank.solve_svr_dcd`), on the same kernel (one CV training fold of
  the first ``n`` stars for each ``n`` of ``--sizes``, gamma 0.3, C = 10, epsilon = 0.05,
  ``--n-pix`` pixels) and the same stopping rule (libsvm's KKT gap and ``|sum beta|`` <=
  ``--tol``, both checked in float64 on every star): mean ADMM iterations and coordinate-descent
  passes over the stars, the fraction converged, CPU seconds per pixel-solve, and the largest
  difference between the two fitted functions at the training stars.

* ``--target``: the target end to end, ``SLAM(cv_subsample=m, kernel_rank=r).fit`` on
  ``--n-star`` stars x ``--n-pix`` pixels (the CV on ``m`` stars with the exact kernel, the
  final fits on all stars with the Nystrom kernel): wall and CPU time with the CV, final fits
  and kernels apart, peak memory, the rms of ``--n-test`` held-out mock stars' labels against
  the truth, and the reference: libsvm (``sklearn.svm.SVR``) on ``--ref-pixels`` pixels at the
  chosen hyperparameters, on one fold's training stars and on all stars, its full grid search
  extrapolated by arithmetic (grid points x folds x 1596 px), and the Nystrom fits against it
  (forward model at the test labels relative to sqrt(CV-MSE), labels of models of those pixels).
* ``--subsample-accuracy``: ``SLAM(cv_subsample=m)`` for each ``m`` of ``--cv-subsample-list``
  against the full CV, exact path, ``--exact-n`` stars (80 % training): fraction of pixels with
  the same choice, the full CV-MSE at the subsample's choice relative to the full-CV best, the
  subsample's CV-MSE relative to the full CV's at that point, and the test-label rms of each.

Usage::

    python benchmarks/scale_15k.py --n-pix 16                     # the scale run on 16 pixels
    python benchmarks/scale_15k.py --accuracy --exact-n 2000 --n-pix 64
    python benchmarks/scale_15k.py --data mock.npz ...           # reuse a saved mock set
    python benchmarks/scale_15k.py --compare-solvers --sizes 1600 3200 12000 --n-pix 8
    python benchmarks/scale_15k.py --target --n-pix 48 --cv-subsample 2000 --kernel-rank 2000
    python benchmarks/scale_15k.py --subsample-accuracy --exact-n 2000 --n-pix 64 --cv-subsample-list 400 800

The mock set is cached in ``benchmarks/results/`` (gitignored).
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import realistic_grid  # noqa: E402
from bench_astroslam import LoadSampler  # noqa: E402
from realistic_grid import _cpu, make_data  # noqa: E402

HERE = Path(__file__).resolve().parent
GRID = {"C": (1.0, 10.0), "epsilon": (0.03, 0.1), "gamma": (0.3, 1.0)}
TARGET_S = 30 * 60
TARGET_GB = 16.0


def load_data(path: Path | None, n_star: int) -> dict:
    """Mock LAMOST set (flux, ivar, labels, wave) of ``n_star`` stars, cached as npz."""
    path = path or HERE / "results" / f"mock_lamost_{n_star}.npz"
    if path.exists():
        d = dict(np.load(path))
        if d["flux"].shape[0] >= n_star:
            return {k: (v[:n_star] if v.ndim == 2 else v) for k, v in d.items()}
    d = make_data(n_star, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **d)
    return d


def pixel_subset(n_total: int, n_pix: int) -> np.ndarray:
    """``n_pix`` evenly spaced pixel indices out of ``n_total``."""
    return np.linspace(0, n_total - 1, min(n_pix, n_total)).round().astype(int)


def train(flux, labels, good, folds, kernel_rank, tol, n_jobs, solver="admm") -> dict:
    """CV grid search + final fits (what ``SLAM.fit`` spends on the SVRs); seconds and solver info."""
    from mdslam.slam.training import _grid_search_cv, _refit_all, _standardise

    Xs, Ys, _ = _standardise(flux, labels, good)
    Cs, es, gs = (np.asarray(GRID[k], float) for k in ("C", "epsilon", "gamma"))
    t0, c0 = time.perf_counter(), time.process_time()
    sse, _, cnt, info = _grid_search_cv(Xs, Ys, good, folds, Cs, es, gs, tol, False, n_jobs, kernel_rank,
                                        solver=solver)
    t_cv = time.perf_counter() - t0
    mse = (sse / np.maximum(cnt, 1)).reshape(-1, Ys.shape[1])
    best = np.unravel_index(np.argmin(mse, axis=0), sse.shape[:3])
    usable = cnt > 0
    t1 = time.perf_counter()
    _, _, rinfo = _refit_all(Xs, Ys, good, Cs[best[0]], es[best[1]], gs[best[2]], usable, tol, 1e-6,
                             False, n_jobs, kernel_rank, solver)
    t_refit = time.perf_counter() - t1
    return {"cv_s": t_cv, "refit_s": t_refit, "total_s": t_cv + t_refit, "cpu_s": time.process_time() - c0,
            **info, **rinfo}


def kernel_build_seconds(labels, folds, kernel_rank) -> tuple[float, list[int]]:
    """Time of the Nystrom kernels of every (fold, gamma) and of the final fits; their ranks."""
    from mdslam.slam.training import _standardise
    from mdslam.svr import nystrom_kernel

    Xs = _standardise(np.zeros((labels.shape[0], 1)), labels, np.ones((labels.shape[0], 1), bool))[0]
    t0 = time.process_time()
    ranks = []
    for g in GRID["gamma"]:
        for tr in [f[0] for f in folds] + [np.arange(Xs.shape[0])]:
            ranks.append(int(nystrom_kernel(Xs[tr], g, kernel_rank, rel_cut=1e-8).landmarks.size))
    return time.process_time() - t0, ranks


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far, GB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def run_scale(args) -> dict:
    """The scale run on a pixel subset, its extrapolation, and the exact-path reference."""
    from sklearn.model_selection import KFold

    d = load_data(args.data, args.n_star)
    pix = pixel_subset(d["flux"].shape[1], args.n_pix)
    flux, ivar, labels = d["flux"][:, pix], d["ivar"][:, pix], d["labels"]
    good = (ivar > 0) & np.isfinite(flux)
    folds = list(KFold(args.folds, shuffle=True, random_state=0).split(flux))
    out = {"n_star": int(flux.shape[0]), "n_pix_run": int(pix.size), "folds": args.folds, "grid": GRID,
           "kernel_rank": args.kernel_rank, "tol": args.tol, "solver": args.solver}
    with LoadSampler() as load:
        t_k, ranks = kernel_build_seconds(labels, folds, args.kernel_rank)
        res = train(flux, labels, good, folds, args.kernel_rank, args.tol, args.n_jobs, args.solver)
    out.update(nystrom=res, kernel_s=t_k, ranks=ranks, load_nystrom=load.summary(), peak_rss_gb=peak_rss_gb())
    n_full = d["flux"].shape[1]
    out["extrapolated_s"] = t_k + max(res["cpu_s"] - t_k, 0.0) * n_full / pix.size
    m = args.exact_n
    sub_folds = list(KFold(args.folds, shuffle=True, random_state=0).split(flux[:m]))
    with LoadSampler() as load:
        ex = train(flux[:m], labels[:m], good[:m], sub_folds, None, args.tol, args.n_jobs)
        ny = train(flux[:m], labels[:m], good[:m], sub_folds, args.kernel_rank, args.tol, args.n_jobs, args.solver)
    out.update(exact_sub=ex, nystrom_sub=ny, load_sub=load.summary(), exact_n=m)
    out["exact_extrapolated_s"] = ex["cpu_s"] * (flux.shape[0] / m) ** 2 * n_full / pix.size
    return out


def fit_models(flux, labels, ivar, kernel_rank, n_jobs, solver="admm"):
    """SLAM with the 8-point grid and 5-fold CV, exact (``kernel_rank=None``) or Nystrom; model, seconds."""
    from mdslam.slam import SLAM

    model = SLAM(C=GRID["C"], epsilon=GRID["epsilon"], gamma=GRID["gamma"], cv=5, n_jobs=n_jobs,
                 kernel_rank=kernel_rank, solver=solver)
    t0 = time.process_time()
    model.fit(flux, labels, ivar)
    return model, time.process_time() - t0


def run_accuracy(args) -> dict:
    """Approximate vs exact SLAM where exact is feasible: CV-MSE, forward model, test labels."""
    d = load_data(args.data, args.exact_n)
    pix = pixel_subset(d["flux"].shape[1], args.n_pix)
    flux, ivar, labels = d["flux"][:, pix], d["ivar"][:, pix], d["labels"]
    n_tr = int(0.8 * flux.shape[0])
    with LoadSampler() as load:
        ex, t_ex = fit_models(flux[:n_tr], labels[:n_tr], ivar[:n_tr], None, args.n_jobs)
        ny, t_ny = fit_models(flux[:n_tr], labels[:n_tr], ivar[:n_tr], args.kernel_rank, args.n_jobs, args.solver)
    use = ex.pixel_usable_ & (ex.cv_mse_scaled_ > 0)
    ratio = ny.cv_mse_scaled_[use] / ex.cv_mse_scaled_[use]
    same = np.mean((ny.C_ == ex.C_) & (ny.epsilon_ == ex.epsilon_) & (ny.gamma_ == ex.gamma_))
    te_lab = labels[n_tr:]
    dF = ny.predict_flux(te_lab) - ex.predict_flux(te_lab)                  # (n_test, n_pix), flux
    rel = np.sqrt(np.mean(dF**2, axis=0))[use] / np.sqrt(ex.cv_mse_[use])
    lab_ex = ex.predict(flux[n_tr:], ivar[n_tr:])
    lab_ny = ny.predict(flux[n_tr:], ivar[n_tr:])
    ok = np.all(np.isfinite(lab_ex) & np.isfinite(lab_ny), axis=1)
    dlab = np.sqrt(np.mean((lab_ny[ok] - lab_ex[ok]) ** 2, axis=0))
    err = np.sqrt(np.mean((lab_ex[ok] - te_lab[ok]) ** 2, axis=0))
    return {"n_train": n_tr, "n_test": int(flux.shape[0] - n_tr), "n_pix": int(pix.size),
            "kernel_rank": args.kernel_rank, "solver": args.solver, "exact_s": t_ex, "nystrom_s": t_ny, "load": load.summary(),
            "cv_mse_ratio_q": np.quantile(ratio, [0, 0.01, 0.5, 0.99, 1]).tolist(),
            "frac_within_0.5pct": float(np.mean(np.abs(ratio - 1) <= 0.005)), "same_hyper": float(same),
            "dF_over_sqrt_cvmse_q": np.quantile(rel, [0.5, 0.99, 1]).tolist(),
            "label_rms_diff": dlab.tolist(), "label_rms_err_exact": err.tolist(), "n_label_ok": int(ok.sum()),
            "nystrom_solver": ny.solver_info_, "exact_solver": ex.solver_info_}


def make_test_data(n_star: int, seed: int = 2025) -> dict:
    """Held-out mock LAMOST stars: ``make_data`` of ``realistic_grid.py`` with another seed."""
    old = realistic_grid.SEED
    realistic_grid.SEED = seed
    try:
        return make_data(n_star, None)
    finally:
        realistic_grid.SEED = old


class PhaseTimer:
    """CPU and wall seconds in SLAM.fit's CV grid search, its final fits and the kernels they build.

    Wraps ``_grid_search_cv`` and ``_refit_all`` (as the estimator calls them),
    ``training._kernel`` (every kernel and its eigen decomposition or Nystrom factor, the
    work shared by all pixels), and after the fits ``infer.start_flux`` (the labelling's start
    grid) and ``infer.training_rchi2`` (labelling the training set for the fit-quality
    threshold) for the time of the ``with`` block.
    """

    def __init__(self):
        self.times: dict[str, list[float]] = {}
        self.blocks: list[dict] = []       # final-fit solver calls: kernel, pixels, start/end wall, thread CPU
        self._in_refit = False
        self._kes: list = []

    def __enter__(self):
        from mdslam.slam import estimator, infer, primal, training

        self._orig = [(estimator, "_grid_search_cv"), (estimator, "_refit_all"), (training, "_kernel"),
                      (infer, "start_flux"), (infer, "training_rchi2")]
        self._fns = [getattr(mod, name) for mod, name in self._orig]
        for (mod, name), fn in zip(self._orig, self._fns, strict=True):
            setattr(mod, name, self._wrap(name, fn))
        self._orig.append((primal, "solve_svr_newton"))
        self._fns.append(primal.solve_svr_newton)
        primal.solve_svr_newton = self._wrap_block(primal.solve_svr_newton)
        return self

    def _wrap_block(self, fn):
        """Time every Newton call of the final fits (a pixel block): wall span and the calling thread's CPU."""
        def timed(ke, Y, *a, **kw):
            if not self._in_refit:
                return fn(ke, Y, *a, **kw)
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(ke, Y, *a, **kw)
            finally:
                self._kes.append(ke)           # alive until the final fits end, so its id names it
                self.blocks.append({"kernel": id(ke), "n_pix": int(Y.shape[0]), "t0": t0,
                                    "t1": time.perf_counter(), "cpu": time.thread_time() - c0})
        return timed

    def refit_groups(self) -> list[dict]:
        """Per kernel (gamma group) of the final fits, in order of first block: pixels, blocks, CPU, wall span."""
        out: dict[int, dict] = {}
        for b in self.blocks:
            g = out.setdefault(b["kernel"], {"n_pix": 0, "n_block": 0, "cpu_s": 0.0, "t0": b["t0"], "t1": b["t1"]})
            g["n_pix"] += b["n_pix"]
            g["n_block"] += 1
            g["cpu_s"] += b["cpu"]
            g["t0"], g["t1"] = min(g["t0"], b["t0"]), max(g["t1"], b["t1"])
        for g in out.values():
            g["wall_s"] = g.pop("t1") - g.pop("t0")
        return list(out.values())

    def blocks_in_flight(self) -> float:
        """Mean number of final-fit blocks running, from the first block's start to the last one's end.

        With ``n_jobs`` threads, ``n_jobs`` means no thread waited for work; unlike CPU / wall it
        does not fall when other jobs share the cores.
        """
        if not self.blocks:
            return float("nan")
        t0, t1 = min(b["t0"] for b in self.blocks), max(b["t1"] for b in self.blocks)
        return sum(b["t1"] - b["t0"] for b in self.blocks) / max(t1 - t0, 1e-9)

    def _wrap(self, name, fn):
        def timed(*a, **kw):
            t0, c0 = time.perf_counter(), _cpu()
            self._in_refit = name == "_refit_all" or self._in_refit
            try:
                return fn(*a, **kw)
            finally:
                self._in_refit = self._in_refit and name != "_refit_all"
                if name == "_refit_all":
                    self.groups = self.refit_groups()
                    self.in_flight = self.blocks_in_flight()
                    self._kes.clear()
                wall_cpu = self.times.setdefault(name, [0.0, 0.0])
                wall_cpu[0] += time.perf_counter() - t0
                wall_cpu[1] += _cpu() - c0
        return timed

    def __exit__(self, *exc):
        for (mod, name), fn in zip(self._orig, self._fns, strict=True):
            setattr(mod, name, fn)


def _label_rms(model, flux, ivar, truth) -> tuple[list[float], np.ndarray]:
    """rms of the labels of held-out spectra against the truth (Teff K, log g, [Fe/H]) and the labels."""
    lab = model.predict(flux, ivar)
    ok = np.all(np.isfinite(lab), axis=1)
    return np.sqrt(np.mean((lab[ok] - truth[ok]) ** 2, axis=0)).tolist(), lab


def _sklearn_exact(model, flux, good, pix, fold_train) -> tuple[np.ndarray, np.ndarray, float, float]:
    """libsvm (``sklearn.svm.SVR``, tol 1e-3) on every training star at the model's (C, eps, gamma) of ``pix``.

    Returns the dual coefficients (len(pix), n_train), intercepts, the mean CPU seconds per fit on
    all stars, and per fit on the stars ``fold_train`` (one CV fold's training set, for the
    reference's CV cost); the standardisation is the model's.
    """
    from sklearn.svm import SVR

    Xs = model.X_train_
    dual, b, cpu, cpu_fold = np.zeros((pix.size, Xs.shape[0])), np.zeros(pix.size), [], []
    for k, j in enumerate(pix):
        svr = SVR(C=model.C_[j], epsilon=model.epsilon_[j], gamma=model.gamma_[j], tol=1e-3, cache_size=2000)
        y = (flux[:, j] - model.flux_mean_[j]) / model.flux_scale_[j]
        for rows, times in ((fold_train, cpu_fold), (np.arange(Xs.shape[0]), cpu)):
            g = rows[good[rows, j]]
            c0 = time.process_time()
            s = svr.fit(Xs[g], y[g])
            times.append(time.process_time() - c0)
        dual[k, g[s.support_]] = s.dual_coef_[0]
        b[k] = s.intercept_[0]
    return dual, b, float(np.mean(cpu)), float(np.mean(cpu_fold))


def _exact_copy(model, pix, dual, b):
    """The model restricted to the pixels ``pix``, with the given (exact) SVR coefficients or its own."""
    import copy

    sub = copy.copy(model)
    for attr in ("C_", "epsilon_", "gamma_", "cv_mse_", "cv_mse_scaled_", "cv_md_", "cv_md_scaled_",
                 "flux_mean_", "flux_scale_", "pixel_usable_", "wavelength_"):
        setattr(sub, attr, getattr(model, attr)[pix])
    sub.dual_coef_ = model.dual_coef_[pix] if dual is None else dual
    sub.intercept_ = model.intercept_[pix] if b is None else b
    sub.n_features_in_ = pix.size
    sub.quick_flux_ = None
    sub._reset_cache()
    return sub


def run_target(args) -> dict:
    """Target 3 end to end: ``SLAM(cv_subsample, kernel_rank)`` on ``--n-star`` mock stars x ``--n-pix`` px.

    Prints wall/CPU time of the fit (CV and final fits apart), peak memory, the test-label rms of
    ``--n-test`` held-out mock stars, and the reference: libsvm on ``--ref-pixels`` pixels on all
    stars at the chosen hyperparameters (CPU per fit, extrapolated to the full k-fold grid search:
    a fit on (k-1)/k of the stars costs ((k-1)/k)^2 of it, times grid points x folds x 1596 px),
    with the Nystrom forward model and labels against that exact SVR on those pixels.
    """
    from mdslam.slam import SLAM

    d = load_data(args.data, args.n_star)
    te = make_test_data(args.n_test)
    pix = pixel_subset(d["flux"].shape[1], args.n_pix)
    flux, ivar, labels = d["flux"][:, pix], d["ivar"][:, pix], d["labels"]
    model = SLAM(C=GRID["C"], epsilon=GRID["epsilon"], gamma=GRID["gamma"], cv=args.folds, n_jobs=args.n_jobs,
                 kernel_rank=args.kernel_rank, cv_subsample=args.cv_subsample, cv_prune=args.cv_prune,
                 random_state=0, tol=args.tol, solver=args.solver)
    with LoadSampler() as load, PhaseTimer() as phases:
        t0, c0 = time.perf_counter(), _cpu()
        model.fit(flux, labels, ivar, wavelength=d["wave"][pix])
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
    out = {"n_star": int(flux.shape[0]), "n_pix": int(pix.size), "n_test": args.n_test, "folds": args.folds,
           "grid": GRID, "cv_subsample": args.cv_subsample, "kernel_rank": args.kernel_rank, "cv_prune": args.cv_prune,
           "fit_wall_s": wall, "fit_cpu_s": cpu, "phases": phases.times, "load": load.summary(),
           "peak_rss_gb": peak_rss_gb(), "solver_info": model.solver_info_,
           "n_landmarks": int(np.count_nonzero(np.any(model.dual_coef_ != 0, axis=0))),
           "shared_kernel_cpu_s": phases.times.get("_kernel", [0.0, 0.0])[1],
           "refit_groups": getattr(phases, "groups", []), "refit_blocks_in_flight": getattr(phases, "in_flight", None)}
    if args.fit_only:
        return out
    tflux, tivar = te["flux"][:, pix], te["ivar"][:, pix]
    out["test_rms"], lab_ny = _label_rms(model, tflux, tivar, te["labels"])
    # the exact reference (libsvm) on a few pixels, same stars and hyperparameters
    rp = np.linspace(0, pix.size - 1, min(max(args.ref_pixels, 4), pix.size)).round().astype(int)
    good = (ivar > 0) & np.isfinite(flux)
    fold_train = np.sort(np.random.default_rng(0).permutation(flux.shape[0])[flux.shape[0] // args.folds:])
    dual, b, sk_cpu, sk_fold = _sklearn_exact(model, flux, good, rp, fold_train)
    ex, ny = _exact_copy(model, rp, dual, b), _exact_copy(model, rp, None, None)
    dF = ny.predict_flux(te["labels"]) - ex.predict_flux(te["labels"])
    out["ref_pixels"] = rp.tolist()
    out["dF_over_sqrt_cvmse"] = (np.sqrt(np.mean(dF**2, axis=0)) / np.sqrt(ex.cv_mse_)).tolist()
    le, ln = ex.predict(tflux[:, rp], tivar[:, rp]), ny.predict(tflux[:, rp], tivar[:, rp])
    ok = np.all(np.isfinite(le) & np.isfinite(ln), axis=1)
    out["ref_label_rms_diff"] = np.sqrt(np.mean((ln[ok] - le[ok]) ** 2, axis=0)).tolist()
    out["ref_label_rms_err_exact"] = np.sqrt(np.mean((le[ok] - te["labels"][ok]) ** 2, axis=0)).tolist()
    out["sklearn_cpu_per_fit_s"], out["sklearn_cpu_per_fold_fit_s"] = sk_cpu, sk_fold
    n_grid = int(np.prod([len(v) for v in GRID.values()]))
    out["sklearn_extrapolated_s"] = (sk_fold * n_grid * args.folds + sk_cpu) * 1596
    out["extrapolated_s"] = _extrapolate(out, d["flux"].shape[1])
    return out


def _extrapolate(out: dict, n_full: int) -> float:
    """CPU seconds of the fit at ``n_full`` pixels: the run's, with everything but the shared kernel work
    scaled linearly in the pixels (an upper bound: the batched solves get cheaper per pixel with more pixels)."""
    cpu, n = out["fit_cpu_s"], out["n_pix"]
    shared = out.get("shared_kernel_cpu_s", 0.0)
    return shared + max(cpu - shared, 0.0) * n_full / n


def run_subsample_accuracy(args) -> dict:
    """Subsample CV against the full CV, both exact, on ``--exact-n`` stars (80 % train) x ``--n-pix`` px."""
    from mdslam.slam import SLAM

    d = load_data(args.data, args.exact_n)
    pix = pixel_subset(d["flux"].shape[1], args.n_pix)
    flux, ivar, labels = d["flux"][:, pix], d["ivar"][:, pix], d["labels"]
    n_tr = int(0.8 * flux.shape[0])
    kw = dict(C=GRID["C"], epsilon=GRID["epsilon"], gamma=GRID["gamma"], cv=5, n_jobs=args.n_jobs, random_state=0)
    out = {"n_train": n_tr, "n_test": int(flux.shape[0] - n_tr), "n_pix": int(pix.size), "rows": []}
    with LoadSampler() as load:
        c0 = _cpu()
        full = SLAM(**kw).fit(flux[:n_tr], labels[:n_tr], ivar[:n_tr])
        out["full_cpu_s"] = _cpu() - c0
        out["full_test_rms"], _ = _label_rms(full, flux[n_tr:], ivar[n_tr:], labels[n_tr:])
        grid = full.cv_mse_grid_.reshape(pix.size, -1)                     # (n_pix, 8), standardised
        use = full.pixel_usable_
        best = grid.min(axis=1)
        for m in args.cv_subsample_list:
            c0 = _cpu()
            sub = SLAM(**kw, cv_subsample=m).fit(flux[:n_tr], labels[:n_tr], ivar[:n_tr])
            cpu = _cpu() - c0
            Cs, es, gs = (np.asarray(GRID[k]) for k in ("C", "epsilon", "gamma"))
            idx = np.ravel_multi_index((np.searchsorted(Cs, sub.C_), np.searchsorted(es, sub.epsilon_),
                                        np.searchsorted(gs, sub.gamma_)), (Cs.size, es.size, gs.size))
            at_choice = grid[np.arange(pix.size), idx]
            regret = (at_choice / best)[use]
            same = (sub.C_ == full.C_) & (sub.epsilon_ == full.epsilon_) & (sub.gamma_ == full.gamma_)
            rms, _ = _label_rms(sub, flux[n_tr:], ivar[n_tr:], labels[n_tr:])
            out["rows"].append({"m": m, "cpu_s": cpu, "same_choice": float(np.mean(same[use])),
                                "regret_q": np.quantile(regret, [0.5, 0.99, 1.0]).tolist(),
                                "sub_cvmse_over_full_q": np.quantile((sub.cv_mse_scaled_ / at_choice)[use],
                                                                     [0.5, 0.99]).tolist(),
                                "test_rms": rms})
            print(json.dumps(out["rows"][-1]), flush=True)
    out["load"] = load.summary()
    return out


class NewtonProfile:
    """Steps per continuation stage of ``solve_svr_newton`` and the CPU of its band Hessian solves.

    Wraps ``primal._newton_stage`` (stars, median band width, mean and max steps, CPU per stage)
    and ``primal._newton_direction`` (the per-pixel Hessians, their Cholesky factors and solves)
    for the time of the ``with`` block; process CPU time, so meant for one-thread runs.
    """

    def __init__(self):
        self.stages: list[dict] = []
        self.hessian_cpu_s = 0.0

    def __enter__(self):
        from mdslam.slam import primal

        self._mod, self._fns = primal, (primal._newton_stage, primal._newton_direction)
        stage, direction = self._fns

        def timed_stage(Phi, Y, C, eps, W, b, delta, *a, **kw):
            c0 = time.process_time()
            steps = stage(Phi, Y, C, eps, W, b, delta, *a, **kw)
            self.stages.append({"n": int(Phi.shape[0]), "delta": float(np.median(delta)), "steps_mean":
                                float(steps.mean()), "steps_max": int(steps.max()), "cpu_s": time.process_time() - c0})
            return steps

        def timed_direction(*a, **kw):
            c0 = time.process_time()
            try:
                return direction(*a, **kw)
            finally:
                self.hessian_cpu_s += time.process_time() - c0

        primal._newton_stage, primal._newton_direction = timed_stage, timed_direction
        return self

    def __exit__(self, *exc):
        self._mod._newton_stage, self._mod._newton_direction = self._fns

    def share(self, total_cpu_s: float) -> float:
        """Fraction of ``total_cpu_s`` spent in the Hessian solves."""
        return self.hessian_cpu_s / max(total_cpu_s, 1e-300)


def _compare_solvers():
    """The solvers ``--compare-solvers`` can run, by name: (function, extra keywords from ``args``)."""
    from mdslam.slam.lowrank import solve_svr_dcd
    from mdslam.slam.primal import solve_svr_newton
    from mdslam.svr import solve_svr_staged

    return {"admm": (solve_svr_staged, lambda a: {}), "dcd": (solve_svr_dcd, lambda a: {"max_epochs": a.max_epochs}),
            "newton": (solve_svr_newton, lambda a: json.loads(a.newton_kw))}


def run_compare(args) -> dict:
    """The Nystrom path's solvers on the same kernels and stopping rule: iterations, CPU, agreement.

    For each ``n`` of ``--sizes``: one 5-fold training fold of the first ``5 n / 4`` stars, or all
    ``n`` loaded stars with ``--all-stars`` (a final fit); ``--gamma``, C = 10, epsilon = 0.05.
    """
    from sklearn.model_selection import KFold

    from mdslam.slam.training import _standardise
    from mdslam.svr import nystrom_kernel

    fns = _compare_solvers()
    d = load_data(args.data, max(args.sizes) if args.all_stars else max(args.sizes) * 5 // 4 + 1)
    pix = pixel_subset(d["flux"].shape[1], args.n_pix)
    rows = []
    for n in args.sizes:
        m = n if args.all_stars else n * 5 // 4                  # one 5-fold training fold has n stars
        flux, ivar, labels = d["flux"][:m, pix], d["ivar"][:m, pix], d["labels"][:m]
        good = (ivar > 0) & np.isfinite(flux)
        Xs, Ys, _ = _standardise(flux, labels, good)
        tr = np.arange(m) if args.all_stars else next(iter(KFold(5, shuffle=True, random_state=0).split(Xs)))[0]
        ke = nystrom_kernel(Xs[tr], args.gamma, args.kernel_rank, tol=args.nystrom_tol,
                            rel_cut=1e-12 if args.all_stars else 1e-8)      # as the final fits, the CV fits
        Y, Cb = np.ascontiguousarray(Ys[tr].T), 10.0 * good[tr].T
        if "dcd" in args.solvers:
            fns["dcd"][0](ke, Y[:1], Cb[:1], 0.05, tol=args.tol, max_epochs=1)      # compile outside the timing
        if "newton" in args.solvers:                                                 # its line search, too
            from mdslam.slam.primal import _ls_kernel

            z = np.zeros((1, 2))
            _ls_kernel()(z, z, z + 1.0, z[:, :1], np.ones(1), np.ones(1), np.arange(1))
        row = {"n": int(tr.size), "rank": int(ke.lam.size), "n_pix": int(pix.size), "gamma": args.gamma}
        sols = {}
        with LoadSampler() as load:
            for name in args.solvers:
                fn, kw = fns[name]
                c0 = time.process_time()
                with NewtonProfile() as prof:
                    sols[name] = sol = fn(ke, Y, Cb, 0.05, tol=args.tol, **kw(args))
                row[name] = {"cpu_per_solve_s": (time.process_time() - c0) / pix.size,
                             "mean_iter": float(sol.n_iter.mean()), "converged": float(sol.converged.mean()),
                             "max_gap": float(sol.gap.max())}
                if name == "newton":
                    row[name]["fallback"] = int(np.sum(sol.state[2]))
                    row[name]["stages"], row[name]["hessian_cpu_share"] = prof.stages, prof.share(
                        time.process_time() - c0)
                print(json.dumps(row), flush=True)
        row["load"] = load.summary()
        f = {k: ke.matmul(v.beta) + v.intercept[:, None] for k, v in sols.items()}
        first = args.solvers[0]
        row["max_abs_f_diff"] = {k: float(np.abs(f[k] - f[first]).max()) for k in args.solvers[1:]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"rows": rows, "tol": args.tol, "max_epochs": args.max_epochs, "solvers": args.solvers,
            "newton_kw": args.newton_kw}


def report_target(out: dict) -> None:
    """One line per figure of ``--target``."""
    ph = out["phases"]
    print_phases(out)
    if "extrapolated_s" not in out:
        return
    t, lim = out["extrapolated_s"], "met" if out["extrapolated_s"] < TARGET_S else "not met"
    ref = out["sklearn_extrapolated_s"]
    print(f"target run: {out['n_star']} stars x {out['n_pix']} px, 8-point grid, {out['folds']}-fold CV on "
          f"{out['solver_info']['cv_n_stars']} stars (cv_subsample), final fits on all stars, kernel_rank "
          f"{out['kernel_rank']} ({out['n_landmarks']} landmarks in the model), cv_prune {out['cv_prune']}")
    print(f"  fit {out['fit_wall_s']:.0f} s wall, {out['fit_cpu_s']:.0f} s CPU (CV {ph['_grid_search_cv'][1]:.0f} s, "
          f"final fits {ph['_refit_all'][1]:.0f} s, kernels {ph['_kernel'][1]:.0f} s, start grid "
          f"{ph.get('start_flux', [0, 0])[1]:.0f} s, training-set labelling {ph.get('training_rchi2', [0, 0])[1]:.0f} s "
          f"CPU); load "
          f"{out['load']['load1_mean']:.1f}; peak RSS {out['peak_rss_gb']:.2f} GB (target < {TARGET_GB:.0f} GB)")
    print(f"  CV mean ADMM iterations {out['solver_info']['cv_mean_iterations']:.0f}, CV solves above tol "
          f"{out['solver_info']['cv_n_unconverged']}; final fits above tol {out['solver_info']['refit_n_above_tol']}; "
          f"CV solves skipped by cv_prune {out['solver_info'].get('cv_pruned_fraction', 0.0):.1%}")
    if out["n_pix"] < 1596:
        print(f"  extrapolated to 1596 px: {t:.0f} s CPU = {t / 60:.1f} min on one core (target < 30 min: {lim})")
    print(f"  test labels ({out['n_test']} held-out mock stars), rms vs truth (Teff K, logg, [Fe/H]) "
          f"{np.round(out['test_rms'], 4)}")
    print(f"  reference: libsvm (sklearn SVR) {out['sklearn_cpu_per_fold_fit_s']:.1f} s CPU per fit on a fold's "
          f"training stars, {out['sklearn_cpu_per_fit_s']:.1f} s on all (mean of {len(out['ref_pixels'])} px); full "
          f"8-point {out['folds']}-fold search + final fits x 1596 px = {ref / 3600:.0f} h by arithmetic; ratio "
          f"{ref / t:.0f}x")
    print(f"  Nystrom vs libsvm on those px: forward model at test labels rms diff / sqrt(CV-MSE) "
          f"{np.round(out['dF_over_sqrt_cvmse'], 4)} (bound 0.02); labels of {len(out['ref_pixels'])}-px models, "
          f"rms diff {np.round(out['ref_label_rms_diff'], 4)} vs exact - truth {np.round(out['ref_label_rms_err_exact'], 4)}")


def print_phases(out: dict) -> None:
    """Wall, CPU and cores used (CPU / wall) of the fit and of each phase; the final fits per gamma group."""
    names = {"_grid_search_cv": "CV", "_refit_all": "final fits", "_kernel": "kernels (in CV and final fits)",
             "start_flux": "start grid", "training_rchi2": "training-set labelling"}
    w, c = out["fit_wall_s"], out["fit_cpu_s"]
    print(f"fit phases ({out['n_star']} stars x {out['n_pix']} px, load {out['load']['load1_mean']:.1f}, peak RSS "
          f"{out['peak_rss_gb']:.2f} GB): whole fit {w:.1f} s wall, {c:.1f} s CPU, {c / w:.2f} cores")
    for key, label in names.items():
        pw, pc = out["phases"].get(key, [0.0, 0.0])
        print(f"  {label:32s} {pw:8.1f} s wall {pc:8.1f} s CPU {pc / max(pw, 1e-9):5.2f} cores")
    if out.get("refit_blocks_in_flight") is not None:
        print(f"  final fits: {out['refit_blocks_in_flight']:.2f} blocks running on average (n_jobs threads: none idle)")
    for i, g in enumerate(out.get("refit_groups", [])):
        print(f"  final fits, gamma group {i}: {g['n_pix']} px in {g['n_block']} blocks, {g['cpu_s']:.1f} s CPU in "
              f"the blocks, {g['wall_s']:.1f} s from its first block's start to its last block's end")


def report_subsample(out: dict) -> None:
    """One line per figure of ``--subsample-accuracy``."""
    print(f"subsample CV vs full CV ({out['n_train']} train / {out['n_test']} test stars, {out['n_pix']} px, "
          f"8-point grid, 5-fold, exact path; load {out['load']['load1_mean']:.1f}): full CV {out['full_cpu_s']:.0f} s "
          f"CPU, test rms {np.round(out['full_test_rms'], 4)}")
    for r in out["rows"]:
        print(f"  m = {r['m']}: {r['cpu_s']:.0f} s CPU; same (C, eps, gamma) {r['same_choice']:.3f}; full CV-MSE at "
              f"the choice / full-CV best: median, 99 %, max {np.round(r['regret_q'], 4)}; subsample CV-MSE / full "
              f"CV-MSE at the choice: median, 99 % {np.round(r['sub_cvmse_over_full_q'], 3)}; test rms "
              f"{np.round(r['test_rms'], 4)}")


def report(out: dict, accuracy: bool) -> None:
    """One line per figure."""
    if "phases" in out:
        return report_target(out)
    if "full_cpu_s" in out:
        return report_subsample(out)
    if "rows" in out:
        for r in out["rows"]:
            parts = [f"{k} {r[k]['mean_iter']:.0f} iterations/passes/steps, {r[k]['converged']:.2f} converged, "
                     f"{r[k]['cpu_per_solve_s']:.3f} s CPU per pixel-solve" for k in out["solvers"]]
            first = out["solvers"][0]
            ratios = ", ".join(f"{first}/{k} CPU {r[first]['cpu_per_solve_s'] / r[k]['cpu_per_solve_s']:.2f} (max |f diff| "
                               f"{r['max_abs_f_diff'][k]:.1e})" for k in out["solvers"][1:])
            print(f"n {r['n']:6d} rank {r['rank']:4d} gamma {r['gamma']} {r['n_pix']} px (load "
                  f"{r['load']['load1_mean']:.1f}): " + " | ".join(parts) + f"; {ratios}")
            if "newton" in r:
                print(f"  newton {out['newton_kw']}: Hessian solves {r['newton']['hessian_cpu_share']:.0%} of its CPU; "
                      "stages (stars, delta, mean / max steps, CPU s): " + "; ".join(
                          f"{g['n']} {g['delta']:.1e} {g['steps_mean']:.1f}/{g['steps_max']} {g['cpu_s']:.1f}"
                          for g in r["newton"]["stages"]))
        return
    if accuracy:
        print(f"accuracy ({out['n_train']} train / {out['n_test']} test stars, {out['n_pix']} px, 8-point grid,"
              f" 5-fold, kernel_rank {out['kernel_rank']}, solver {out['solver']}; load {out['load']['load1_mean']:.1f})")
        print(f"  fit CPU time exact {out['exact_s']:.1f} s  nystrom {out['nystrom_s']:.1f} s  "
              f"ratio {out['exact_s'] / out['nystrom_s']:.2f}x")
        print(f"  CV-MSE nystrom/exact quantiles (0, 1, 50, 99, 100 %) {np.round(out['cv_mse_ratio_q'], 4)}; "
              f"within 0.5 %: {out['frac_within_0.5pct']:.3f}; same (C, eps, gamma): {out['same_hyper']:.3f}")
        print(f"  forward model at test labels, rms difference / sqrt(exact CV-MSE): median, 99 %, max "
              f"{np.round(out['dF_over_sqrt_cvmse_q'], 4)}")
        print(f"  test labels (Teff K, logg, [Fe/H]) rms nystrom - exact {np.round(out['label_rms_diff'], 4)}"
              f"  vs exact - truth {np.round(out['label_rms_err_exact'], 4)} ({out['n_label_ok']} spectra)")
        return
    ny, ex, nys = out["nystrom"], out["exact_sub"], out["nystrom_sub"]
    t, lim = out["extrapolated_s"], "met" if out["extrapolated_s"] < TARGET_S else "not met"
    print(f"scale run: {out['n_star']} stars x {out['n_pix_run']} px, 8-point grid, {out['folds']}-fold, "
          f"kernel_rank {out['kernel_rank']} (ranks {min(out['ranks'])}-{max(out['ranks'])}), tol {out['tol']}")
    print(f"  measured {ny['total_s']:.0f} s wall, {ny['cpu_s']:.0f} s CPU (CV {ny['cv_s']:.0f} s, final fits "
          f"{ny['refit_s']:.0f} s wall; kernel builds {out['kernel_s']:.0f} s CPU); load {out['load_nystrom']['load1_mean']:.1f}; mean ADMM iterations "
          f"{ny['cv_mean_iterations']:.0f}; CV solves above tol {ny['cv_n_unconverged']}")
    print(f"  extrapolated to 1596 px, one core: {t:.0f} s CPU = {t / 60:.1f} min (target < 30 min: {lim}); "
          f"peak RSS {out['peak_rss_gb']:.2f} GB (target < {TARGET_GB:.0f} GB)")
    print(f"  reference on the first {out['exact_n']} stars: CPU exact {ex['cpu_s']:.0f} s, nystrom {nys['cpu_s']:.0f} s "
          f"(ratio {ex['cpu_s'] / nys['cpu_s']:.2f}x, load {out['load_sub']['load1_mean']:.1f}); exact "
          f"extrapolated to all stars and pixels >= {out['exact_extrapolated_s'] / 3600:.1f} h, ratio >= "
          f"{out['exact_extrapolated_s'] / t:.1f}x")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-star", type=int, default=15000)
    ap.add_argument("--n-pix", type=int, default=1596, help="pixels trained (evenly spaced); time extrapolated")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--kernel-rank", type=int, default=2000)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--exact-n", type=int, default=2000, help="stars of the exact-path reference")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--accuracy", action="store_true", help="error of the approximate path vs exact")
    ap.add_argument("--solver", choices=("admm", "dcd", "newton"), default="admm", help="solver of the Nystrom path")
    ap.add_argument("--compare-solvers", action="store_true", help="ADMM vs coordinate descent, same kernels")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1600, 3200, 12000], help="training stars compared")
    ap.add_argument("--max-epochs", type=int, default=2000, help="coordinate-descent pass cap (--compare-solvers)")
    ap.add_argument("--solvers", nargs="+", choices=("admm", "dcd", "newton"), default=["admm", "dcd"],
                    help="solvers compared, the first is the reference (--compare-solvers)")
    ap.add_argument("--newton-kw", default="{}", help="JSON keywords of solve_svr_newton, e.g. "
                    "'{\"stage_rtol\": 1e-10, \"float32_hessian\": false}' (--compare-solvers)")
    ap.add_argument("--all-stars", action="store_true", help="kernel of all --sizes stars, not a CV fold (--compare-solvers)")
    ap.add_argument("--gamma", type=float, default=0.3, help="RBF width (--compare-solvers)")
    ap.add_argument("--nystrom-tol", type=float, default=1e-7, help="Nystrom residual (--compare-solvers)")
    ap.add_argument("--target", action="store_true", help="end to end: SLAM(cv_subsample, kernel_rank).fit")
    ap.add_argument("--cv-subsample", type=int, default=2000, help="stars of the CV (--target)")
    ap.add_argument("--cv-prune", type=float, default=None, help="SLAM(cv_prune) (--target)")
    ap.add_argument("--n-test", type=int, default=500, help="held-out mock stars labelled (--target)")
    ap.add_argument("--ref-pixels", type=int, default=4, help="pixels fitted by libsvm as the reference, >= 4 (--target)")
    ap.add_argument("--fit-only", action="store_true",
                    help="stop after the fit and print its phases, no test labels or libsvm reference (--target)")
    ap.add_argument("--subsample-accuracy", action="store_true", help="subsample CV vs full CV, exact path")
    ap.add_argument("--cv-subsample-list", type=int, nargs="+", default=[500, 1000],
                    help="subsample sizes compared (--subsample-accuracy)")
    ap.add_argument("--data", type=Path, default=None, help="saved mock set (npz: flux, ivar, labels, wave)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "scale_15k.json")
    args = ap.parse_args(argv)
    modes = [(args.compare_solvers, run_compare), (args.accuracy, run_accuracy), (args.target, run_target),
             (args.subsample_accuracy, run_subsample_accuracy), (True, run_scale)]
    out = next(fn for on, fn in modes if on)(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=float))
    report(out, args.accuracy)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
