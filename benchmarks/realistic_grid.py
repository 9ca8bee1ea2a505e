"""SLAM training on the realistic grid: 4 C x 5 epsilon x 6 gamma (120 points), 10-fold CV, mock LAMOST.

1,000 mock LAMOST M dwarfs (``MockSurvey("lamost", seed=2024, snr_median=100)``, known labels)
preprocessed onto the LAMOST grid (1,596 pixels), trained with SLAM's default grid and 10-fold
CV.  The reference is astroslam (the published SLAM code) trained *in full* on a subset of the
pixels (``--astroslam-pixels``, default 16, one at the centre of each of as many equal bins of
the ``--n-pix`` subset) with the same stars, grid and folds; its time for all pixels is
extrapolated linearly in the number of pixels (astroslam fits each pixel independently, so its
cost is a sum over pixels; the subset's spread of pixel types is the extrapolation's
uncertainty).  Both use astroslam's folds (``KFold(10)``, unshuffled).

``--compare-prune F`` fits mdslam twice in one process, the exact grid search and then
``cv_prune=F``, and prints the fraction of pixels with the same (C, epsilon, gamma), the exact
search's CV-MSE at the pruned choice over its best (median, max) and the label rms of both
models on ``--n-test`` held-out mock stars (another seed) against their known labels.
``--fixed-cost`` times what the pixels share (the CV's 60 kernels of the training folds with
their eigendecompositions and fold-to-test kernels, the final fits' kernels) alone, and splits
the fit's CPU into that and a per-pixel rest for the extrapolation to 1,596 px.

Usage::

    python benchmarks/realistic_grid.py                        # the full problem (mdslam: tens of min)
    python benchmarks/realistic_grid.py --n-star 300 --n-pix 64 --astroslam-pixels 4   # a smoke run
    python benchmarks/realistic_grid.py --astroslam-json RUN.json                      # reuse astroslam
    python benchmarks/realistic_grid.py --n-pix 16 --solver admm-smo --compare-prune 1.5 --fixed-cost \
        --astroslam-pixels 0                                   # does cv_prune keep the choices?
    python benchmarks/realistic_grid.py --n-pix 16 --skip-mdslam --astroslam-pixels 2  # astroslam alone
    python benchmarks/realistic_grid.py --n-pix 16 --solver admm-smo --astroslam-pixels 0 \
        --cv-screen '{"keep": 8}' --exact-npz results/realistic/realistic_16px_exact.npz     # screened vs exact

astroslam runs in its own virtual environment (``$ASTROSLAM_VENV``, see ``bench_astroslam.py``).
Prints one line per figure with the ratio (astroslam / mdslam) and the machine load; CPU times
are user + system of all threads (mdslam) and of astroslam's joblib workers, sampled every 2 s.
Each mdslam fit's per-pixel arrays (choices, CV-MSE grid, unconverged counts) are saved beside
``realistic.json`` as ``realistic_<n_pix>px_<exact|pruneF|screen>.npz``; an exact run also keeps
each fold's CV sums (``sse_per_fold``), from which ``--proxy-eval`` scores the first folds as a
screening proxy.  ``--cv-screen`` fits ``SLAM(cv_screen=...)`` and splits its CPU into the
proxy, the shared kernels, the kept points' solves and the final fits.
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from bench_astroslam import VENV, LoadSampler, _worker_cpu, ensure_venv  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 2024
TARGET_S = 15 * 60
PRUNE_AFTER = 2          # folds solved in full before cv_prune drops points (SLAM's rule)


def make_data(n_star: int, n_pix: int | None, seed: int = SEED) -> dict:
    """Mock LAMOST stars on the LAMOST grid: flux, ivar (n_star, n_pix), labels (n_star, 3; K, dex, dex), wave (n_pix,; AA).

    ``seed`` draws the stars (:data:`SEED` for the training set, another for held-out test
    stars); the pixel subset depends on ``n_pix`` alone, so both sets share it.
    """
    from mdslam.compendium.tracks import LAMOST_GRID
    from mdslam.mock import MockSurvey
    from mdslam.preprocess import log_lambda_grid, preprocess

    ms = MockSurvey("lamost", seed=seed, snr_median=100.0, snr_sigma=0.4, logg_scatter=0.05)
    spec, truth = ms.generate(n_star)
    pp = preprocess(spec, grid=log_lambda_grid(**LAMOST_GRID), rv=np.asarray(truth["rv_true"]), progress=False)
    pix = np.arange(pp.flux.shape[1])
    if n_pix is not None and n_pix < pix.size:
        pix = np.linspace(0, pix.size - 1, n_pix).round().astype(int)
    labels = np.column_stack([truth["teff_true"], truth["logg_true"], truth["feh_true"]])
    return {"flux": pp.flux[:, pix], "ivar": pp.ivar[:, pix], "labels": labels, "wave": pp.wavelength[pix]}


def _cpu(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds of this process (all threads) or of its waited-for children."""
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run_mdslam(d: dict, folds: int, n_jobs: int, cv_prune: float | None = None, solver: str = "admm",
               test: dict | None = None, cv_screen=None) -> dict:
    """Fit ``SLAM`` with the default 120-point grid on ``d``; times (s), solver report, choices, test rms.

    With ``test`` (held-out stars of :func:`make_data`) the fitted model labels them and
    ``test_rms`` (3,) is the rms of label - truth (K, dex, dex) over the spectra it fitted.
    """
    from sklearn.model_selection import KFold

    from mdslam.slam import SLAM

    model = SLAM(cv=KFold(folds), n_jobs=n_jobs, cv_prune=cv_prune, solver=solver,   # the default 120-point grid
                 cv_screen=cv_screen)
    with (LoadSampler() as load, _PartialSums(len(model.gamma) * PRUNE_AFTER, len(model.gamma)) as partial,
          _ScreenTimes() as st):
        t0, c0 = time.perf_counter(), _cpu()
        model.fit(d["flux"], d["labels"], d["ivar"], wavelength=d["wave"])
        dt, cpu = time.perf_counter() - t0, _cpu() - c0
    out = {"train_s": dt, "train_cpu_s": cpu, "cv_prune": cv_prune, "solver": solver, "solver_info": model.solver_info_,
           "cv_screen": cv_screen, "screen_cpu_s": st.cpu,
           "load": load.summary(), "cv_unconverged": model.cv_unconverged_,
           "grid_points": int(np.prod([len(v) for v in model.param_grid_.values()])),
           "cv_mse_scaled": model.cv_mse_scaled_, "cv_mse_grid": model.cv_mse_grid_, "C": model.C_,
           "epsilon": model.epsilon_, "gamma": model.gamma_,
           "grid": {k: np.asarray(v).tolist() for k, v in model.param_grid_.items()}}
    if cv_prune is None:
        out["sse_partial"] = partial.sse
        out["sse_per_fold"] = np.array(partial.per_fold)
    out["kernel_cpu_s"] = np.array(partial.kernel_cpu_s)
    if test is not None:
        lab = model.predict(test["flux"], test["ivar"])
        ok = np.all(np.isfinite(lab), axis=1)
        out["test_rms"] = np.sqrt(np.mean((lab[ok] - test["labels"][ok]) ** 2, axis=0))
        out["test_n_fitted"] = int(ok.sum())
    return out


class _ScreenTimes:
    """Within ``with``: CPU seconds (process, all threads) of the screened search's parts.

    ``cpu["proxy"]`` the stage-1 grid search on the subsample, ``cpu["stage2"]`` the full CV of
    the kept points, of which ``cpu["stage2_kernels"]`` builds the shared (fold, gamma) kernels,
    their eigendecompositions and fold-to-test kernels (the rest: the per-pixel solves).
    """

    def __init__(self):
        self.cpu = {"proxy": 0.0, "stage2": 0.0, "stage2_kernels": 0.0}

    def _timed(self, fn, key):
        def run(*a, **k):
            c0 = _cpu()
            try:
                return fn(*a, **k)
            finally:
                self.cpu[key] += _cpu() - c0
        return run

    def __enter__(self):
        from mdslam.slam import screen

        self._mod = screen
        self._orig = {k: getattr(screen, k) for k in ("_grid_search_cv", "masked_search_cv", "_kernel", "rbf_kernel")}
        for name, key in (("_grid_search_cv", "proxy"), ("masked_search_cv", "stage2"), ("_kernel", "stage2_kernels"),
                          ("rbf_kernel", "stage2_kernels")):
            setattr(screen, name, self._timed(self._orig[name], key))
        return self

    def __exit__(self, *exc):
        for k, v in self._orig.items():
            setattr(self._mod, k, v)


class _PartialSums:
    """Within ``with``: copy the CV's squared-error sums after its first ``n_calls`` (fold, gamma) kernels.

    Wraps :func:`mdslam.slam.training._cv_kernel_step` (one call per fold and gamma, folds in
    order); with ``n_calls`` = n_gamma x :data:`PRUNE_AFTER`, ``sse`` (n_C, n_epsilon, n_gamma,
    n_pix) holds what ``cv_prune`` decides on, so one exact search gives the choice of any factor.
    ``per_fold`` (n_fold, n_C, n_epsilon, n_gamma, n_pix) keeps each fold's own sums (every
    ``n_gamma`` calls) and ``kernel_cpu_s`` (n_fold x n_gamma,) the process CPU of each call
    (its solves and test residuals), from which any subset of folds can be scored.
    """

    def __init__(self, n_calls: int, n_gamma: int | None = None):
        self.n_calls, self.calls, self.sse = n_calls, 0, None
        self.n_gamma, self.per_fold, self.kernel_cpu_s = n_gamma, [], []

    def __enter__(self):
        from mdslam.slam import training

        self._mod, self._orig = training, training._cv_kernel_step

        def step(*a, **k):
            c0 = _cpu()
            add = self._orig(*a, **k)

            def add_timed():
                add()
                self.kernel_cpu_s.append(_cpu() - c0)
                self.calls += 1
                total = np.array(a[10][0])          # sums[0]: sse
                if self.calls == self.n_calls:
                    self.sse = total
                if self.n_gamma and self.calls % self.n_gamma == 0:
                    self.per_fold.append(total - sum(self.per_fold) if self.per_fold else total)
            return add_timed
        training._cv_kernel_step = step
        return self

    def __exit__(self, *exc):
        self._mod._cv_kernel_step = self._orig


def simulate_prune(exact: dict, prune, folds: int) -> dict:
    """The choices of ``cv_prune=prune`` (a factor or a schedule) from the exact search's partial and full CV sums.

    A point stays while its CV-MSE over the folds done is <= the step's factor x the best of the
    pixel's points still solved (:func:`mdslam.slam.training.replay_prune`; the per-pixel test
    count cancels); the pruned search then picks the lowest full CV-MSE among the points that
    stayed, which are the exact search's values (same folds, same solves).  A schedule needs the per-fold sums
    (``sse_per_fold``); a factor uses them or the sums after :data:`PRUNE_AFTER` folds.
    Returns the choice index (n_pix, 3) and the fraction of CV solves skipped.
    """
    from mdslam.slam.training import replay_prune

    per_fold = exact.get("sse_per_fold")
    if per_fold is None:
        if np.ndim(prune) != 0:
            raise SystemExit("a cv_prune schedule needs the per-fold sums (sse_per_fold) of the exact run")
        partial = np.asarray(exact["sse_partial"], float)       # the sums of the first PRUNE_AFTER folds
        per_fold = np.zeros((folds,) + partial.shape)
        per_fold[0] = partial
    alive, solved = replay_prune(per_fold, prune, prune_after=PRUNE_AFTER)
    g = np.where(np.moveaxis(alive, -1, 0), np.asarray(exact["cv_mse_grid"]), np.inf)
    best = np.argmin(g.reshape(g.shape[0], -1), axis=1)
    idx = np.column_stack(np.unravel_index(best, g.shape[1:]))
    return {"index": idx, "skipped": 1.0 - solved}


def grid_index(m: dict) -> np.ndarray:
    """Index (n_pix, 3) of each pixel's chosen (C, epsilon, gamma) in the grid of the run ``m``."""
    return np.column_stack([np.argmin(np.abs(np.log(np.asarray(m["grid"][k])[None, :] / np.asarray(m[k])[:, None])),
                                      axis=1) for k in ("C", "epsilon", "gamma")])


def compare_prune(exact: dict, pruned: dict | np.ndarray) -> dict:
    """The pruned search's choices against the exact search's, on the exact search's CV-MSE grid.

    ``pruned`` is a run or its choice index (n_pix, 3).  Returns the fraction of pixels with the
    same (C, epsilon, gamma), and per pixel the exact CV-MSE at the pruned choice over the exact
    best (1 where the choice is the same).
    """
    ie, ip = grid_index(exact), (pruned if isinstance(pruned, np.ndarray) else grid_index(pruned))
    same = np.all(ie == ip, axis=1)
    g = np.asarray(exact["cv_mse_grid"])
    at = g[np.arange(g.shape[0]), ip[:, 0], ip[:, 1], ip[:, 2]]
    return {"same_fraction": float(same.mean()), "regret": at / np.asarray(exact["cv_mse_scaled"])}


def compare_grids(exact_grid: np.ndarray, grid: np.ndarray) -> dict:
    """A search's choice (lowest finite entry of ``grid``) against the exact search's, both (n_pix, n_C, n_eps, n_gamma).

    Returns the fraction of pixels with the same (C, epsilon, gamma) and per pixel the exact
    CV-MSE at the search's choice over the exact best (the regret, 1 where the choice is the same).
    """
    fe = np.asarray(exact_grid).reshape(len(exact_grid), -1)
    fs = np.asarray(grid).reshape(len(grid), -1)
    ie, js = np.argmin(fe, axis=1), np.argmin(np.where(np.isfinite(fs), fs, np.inf), axis=1)
    rows = np.arange(len(fe))
    return {"same_fraction": float(np.mean(ie == js)), "regret": fe[rows, js] / fe[rows, ie]}


def proxy_rank(exact_grid: np.ndarray, proxy: np.ndarray, keeps=(1, 3, 5, 8, 12)) -> dict:
    """How well a proxy CV-MSE (n_pix, n_C, n_eps, n_gamma) ranks the exact search's grid.

    Per ``k`` of ``keeps``: the fraction of pixels whose exact best point is among the proxy's
    ``k`` best, and the regret of the screened search that keeps them (exact CV-MSE of the best
    kept point over the exact best: median, max), and the fraction of kept points at C >= 100.
    """
    fe = np.asarray(exact_grid).reshape(len(exact_grid), -1)
    fp = np.asarray(proxy).reshape(len(proxy), -1)
    order = np.argsort(np.where(np.isfinite(fp), fp, np.inf), axis=1, kind="stable")
    ie = np.argmin(fe, axis=1)
    n_c = np.asarray(exact_grid).shape[1]
    big_c = np.repeat(np.arange(n_c), fe.shape[1] // n_c) >= n_c - 2
    out = {}
    for k in keeps:
        top = order[:, :k]
        reg = np.take_along_axis(fe, top, axis=1).min(axis=1) / fe[np.arange(len(fe)), ie]
        out[k] = {"contains": float(np.mean((top == ie[:, None]).any(axis=1))), "regret_median": float(np.median(reg)),
                  "regret_max": float(reg.max()), "large_C_fraction": float(big_c[top].mean())}
    return out


def run_proxy(d: dict, n_star: int, folds: int, solver: str, n_jobs: int, seed: int = 0) -> dict:
    """The screened search's stage 1 alone: the whole grid by CV with ``folds`` folds on ``n_star`` stars.

    As :func:`mdslam.slam.screen.screened_search_cv` draws them (seed ``seed``, SLAM's
    ``random_state``); returns the proxy CV-MSE grid (n_pix, n_C, n_eps, n_gamma), its CPU
    seconds and its solves above tol.
    """
    from mdslam.sampling import draw
    from mdslam.slam import DEFAULT_C, DEFAULT_EPSILON, DEFAULT_GAMMA
    from mdslam.slam.training import _grid_search_cv, _iter_folds, _standardise

    good = np.isfinite(d["flux"]) & (d["ivar"] > 0)
    Xs, Ys, _ = _standardise(np.where(good, d["flux"], 0.0), d["labels"], good)
    rows = draw(len(Xs), n_star, seed)
    c0 = _cpu()
    sse, _, cnt, info = _grid_search_cv(Xs[rows], Ys[rows], good[rows], _iter_folds(rows.size, folds, seed),
                                        *(np.asarray(v, float) for v in (DEFAULT_C, DEFAULT_EPSILON, DEFAULT_GAMMA)),
                                        1e-3, False, n_jobs, solver=solver)
    return {"mse": np.moveaxis(sse / cnt, -1, 0), "cpu_s": _cpu() - c0, "n_unconverged": info["cv_n_unconverged"]}


def _print_proxies(exact: dict, d: dict, specs: str, solver: str, n_jobs: int, folds: int) -> dict:
    """Rank quality of the subsample proxies ``specs`` ("n_star:folds,...") and of the exact search's first folds."""
    eg = np.asarray(exact["cv_mse_grid"])
    cands = []
    if "sse_per_fold" in exact:
        per = np.asarray(exact["sse_per_fold"])
        for f in (1, 2, 3):
            cands.append((f"first {f} of the {folds} folds (all stars)", np.moveaxis(per[:f].sum(0), -1, 0), None))
    for spec in specs.split(","):
        m, f = (int(v) for v in spec.split(":"))
        r = run_proxy(d, m, f, solver, n_jobs)
        cands.append((f"{m} stars, {f} folds", r["mse"], r))
    res = {}
    for name, mse, r in cands:
        pr = proxy_rank(eg, mse)
        extra = "" if r is None else f"; {r['cpu_s']:.1f} s CPU = {r['cpu_s'] / len(eg):.2f} s per px, " \
                                     f"{r['n_unconverged']} solves above tol"
        print(f"{'proxy ' + name:44s} " + "; ".join(
            f"k={k}: best kept {v['contains']:.2f}, regret med {v['regret_median']:.4f} max {v['regret_max']:.4f}, "
            f"C>=100 {v['large_C_fraction']:.2f}" for k, v in pr.items()) + extra, flush=True)
        res[name] = {"rank": pr, **({} if r is None else {"cpu_s": r["cpu_s"], "n_unconverged": r["n_unconverged"]})}
    return res


def fixed_cost(d: dict, folds: int, gammas) -> dict:
    """CPU seconds (this thread, one-thread BLAS) of what every pixel shares in the CV and final fits.

    The CV's kernels of the training folds and their eigendecompositions (as ``SLAM.fit`` makes
    them: eigenvalues below 1e-8 of the largest cut) and the fold-to-test kernels, one per
    (fold, gamma); the final fits' kernels on all stars with their eigendecompositions, one per gamma.
    """
    from sklearn.model_selection import KFold

    from mdslam.slam.training import _kernel, _standardise, _support_index
    from mdslam.svr import rbf_kernel

    Xs = _standardise(d["flux"], d["labels"], np.isfinite(d["flux"]) & (d["ivar"] > 0))[0]
    c0 = time.thread_time()
    for tr, te in KFold(folds).split(Xs):
        for g in gammas:
            ke = _kernel(Xs[tr], g, None, rel_cut=1e-8)
            rbf_kernel(Xs[tr][_support_index(ke)], Xs[te], g)
    cv = time.thread_time() - c0
    c0 = time.thread_time()
    for g in gammas:
        _kernel(Xs, g, None)
    return {"cv_kernels_cpu_s": cv, "final_kernels_cpu_s": time.thread_time() - c0,
            "n_cv_kernels": folds * len(gammas), "n_final_kernels": len(gammas)}


def astroslam_pixels(n_pix: int, k: int) -> np.ndarray:
    """``k`` pixels of ``n_pix``, one at the centre of each of ``k`` equal bins (no spectrum ends for small ``k``)."""
    k = min(k, n_pix)
    return ((np.arange(k) + 0.5) * n_pix / k).astype(int)


def run_astroslam(d: dict, pix: np.ndarray, grid: dict, folds: int, outdir: Path) -> dict:
    """astroslam (its venv, ``n_jobs=2``) trained in full on the pixels ``pix`` of ``d``: times (s), choices, CV-MSE.

    ``cpu_s`` is the CPU of its whole process tree, ``train_cpu_s`` that of its joblib workers
    (the training alone), sampled every 2 s.
    """
    py = ensure_venv()
    data = outdir / "astroslam_subset.npz"
    np.savez(data, wave=d["wave"][pix], flux=d["flux"][:, pix], ivar=d["ivar"][:, pix], labels=d["labels"])
    spec = outdir / "astroslam_grid.json"
    spec.write_text(json.dumps({**grid, "cv": folds}))
    out = outdir / "astroslam_subset.json"
    c0 = _cpu(resource.RUSAGE_CHILDREN)
    with LoadSampler() as load, open(outdir / "astroslam_subset.log", "w") as log:
        proc = subprocess.Popen([str(py), str(HERE / "_astroslam_train.py"), str(data), str(spec), "2", str(out)],
                                stdout=log, stderr=subprocess.STDOUT)
        workers = _worker_cpu(proc)
        if proc.wait() != 0:
            raise SystemExit(f"astroslam failed (exit {proc.returncode}): see {outdir / 'astroslam_subset.log'}")
    res = json.loads(out.read_text())
    res.update(pixels=pix.tolist(), load=load.summary(), cpu_s=_cpu(resource.RUSAGE_CHILDREN) - c0,
               train_cpu_s=workers, measured_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    out.write_text(json.dumps(res, indent=1))
    return res


def _print_mdslam(m: dict, n_pix: int, folds: int, label: str = "mdslam") -> None:
    """The training time, its linear extrapolation, pruning, convergence and load lines of one mdslam run."""
    si = m["solver_info"]
    tgt = "met" if m["train_s"] < TARGET_S else "NOT met"
    print(f"{label + ' training (CV grid + final fits)':44s} {m['train_s']:10.1f} s   ({m['grid_points']} grid points, "
          f"CPU {m['train_cpu_s']:.1f} s = {m['train_cpu_s'] / n_pix:.2f} s per px, cv_prune {m['cv_prune']}, "
          f"solver {m['solver']})  target < {TARGET_S / 60:.0f} min: {tgt}")
    if n_pix < 1596:
        f = 1596 / n_pix
        print(f"{'  extrapolated to 1596 px (linear in pixels)':44s} {m['train_s'] * f:10.1f} s wall, "
              f"{m['train_cpu_s'] * f:.1f} s CPU (an upper bound: the shared kernels scale too)")
    if "cv_pruned_fraction" in si:
        print(f"{'  CV solves skipped by cv_prune':44s} {si['cv_pruned_fraction']:.3f} of pixel x grid point x fold")
    bad = np.flatnonzero(m["cv_unconverged"])
    print(f"{'  pixels with CV solves above tol (count)':44s} "
          + (", ".join(f"{p}: {m['cv_unconverged'][p]}" for p in bad[:40]) if bad.size else "none")
          + (" ..." if bad.size > 40 else ""))
    print(f"{'  CV solves above libsvm tol 1e-3':44s} {si['cv_n_unconverged']} of "
          f"{m['grid_points'] * folds * n_pix} (pixel x grid point x fold); max KKT gap "
          f"{si['cv_max_kkt_gap']:.2g}; mean iterations {si['cv_mean_iterations']:.0f}")
    if "test_rms" in m:
        print(f"{'  test labels rms vs truth (Teff K, logg, FeH)':44s} {np.round(m['test_rms'], 4).tolist()} "
              f"({m['test_n_fitted']} held-out spectra fitted)")
    print(f"{'  machine load during the fit (1-min avg)':44s} mean {m['load']['load1_mean']:.2f} "
          f"max {m['load']['load1_max']:.2f}")


def _print_fixed(fc: dict, runs: list[dict], n_pix: int) -> None:
    """Fixed (shared-kernel) CPU against the fits' CPU, and the per-pixel remainder extrapolated to 1596 px."""
    fixed = fc["cv_kernels_cpu_s"] + fc["final_kernels_cpu_s"]
    print(f"{'shared kernels + eigendecompositions':44s} {fixed:10.1f} s CPU ({fc['n_cv_kernels']} CV kernels "
          f"{fc['cv_kernels_cpu_s']:.1f} s, {fc['n_final_kernels']} final-fit kernels {fc['final_kernels_cpu_s']:.1f} s; "
          f"one thread)")
    for m in runs:
        per = (m["train_cpu_s"] - fixed) / n_pix
        print(f"{'  cv_prune ' + str(m['cv_prune']) + ': the rest per pixel':44s} {per:10.2f} s CPU; "
              f"to 1596 px: {fixed:.0f} + 1596 x {per:.2f} = {fixed + 1596 * per:.0f} s CPU "
              f"({(fixed + 1596 * per) / 2 / 60:.1f} min on 2 free cores)")


def _print_compare(exact: dict, pruned: dict) -> dict:
    """The choice-check lines: same (C, epsilon, gamma), CV-MSE regret, CPU and test rms of both searches."""
    c = compare_prune(exact, pruned)
    r = c["regret"]
    print(f"{'cv_prune ' + str(pruned['cv_prune']) + ' vs the exact search':44s} same (C, eps, gamma) on "
          f"{c['same_fraction']:.3f} of the pixels; exact CV-MSE at the pruned choice / exact best: median "
          f"{np.median(r):.4f}, max {r.max():.4f}; CPU {pruned['train_cpu_s']:.1f} vs {exact['train_cpu_s']:.1f} s "
          f"({exact['train_cpu_s'] / pruned['train_cpu_s']:.2f}x)")
    if "test_rms" in exact:
        print(f"{'  test rms (Teff K, logg, FeH) exact | pruned':44s} {np.round(exact['test_rms'], 4).tolist()} | "
              f"{np.round(pruned['test_rms'], 4).tolist()}")
    return {"same_fraction": c["same_fraction"], "regret": r.tolist()}


def _print_simulated(exact: dict, folds: int, factors=(1.1, 1.2, 1.5, 2.0, 3.0), harmonic=(0.2, 0.5, 1.0)) -> dict:
    """The choice check of ``cv_prune`` per factor and per schedule ``harmonic_prune(folds, c)``, from the
    exact search's sums (:func:`simulate_prune`; the schedules need its per-fold sums)."""
    from mdslam.slam import harmonic_prune

    res = {}
    runs = [(str(f), f) for f in factors]
    if exact.get("sse_per_fold") is not None:
        runs += [(f"harmonic_prune({folds}, {c})", harmonic_prune(folds, c)) for c in harmonic]
    for name, f in runs:
        sim = simulate_prune(exact, f, folds)
        c = compare_prune(exact, sim["index"])
        r = c["regret"]
        print(f"{'  cv_prune ' + name + ' from the exact sums':44s} skips {sim['skipped']:.3f} of the CV solves; same "
              f"(C, eps, gamma) on {c['same_fraction']:.3f} of the pixels; CV-MSE at its choice / best: median "
              f"{np.median(r):.4f}, max {r.max():.4f}")
        res[name] = {"skipped": sim["skipped"], "same_fraction": c["same_fraction"], "regret": r.tolist()}
    return res


def _print_screen(m: dict, exact: dict | None, n_pix: int) -> dict:
    """The screened fit's CPU split (proxy, shared kernels, per-pixel solves, final fits) and its choices vs ``exact``."""
    c, si = m["screen_cpu_s"], m["solver_info"]
    solves = c["stage2"] - c["stage2_kernels"]
    rest = m["train_cpu_s"] - c["proxy"] - c["stage2"]
    print(f"{'  screened search CPU split':44s} proxy {c['proxy']:.1f} s ({c['proxy'] / n_pix:.2f} s per px); full CV "
          f"of the kept points {c['stage2']:.1f} s = shared kernels {c['stage2_kernels']:.1f} s + solves {solves:.1f} s "
          f"({solves / n_pix:.2f} s per px); final fits and the rest {rest:.1f} s ({rest / n_pix:.2f} s per px)")
    print(f"{'  kept points / full-CV solves not made':44s} {si['cv_screen']}; {si['cv_screened_fraction']:.3f} of the "
          f"exact search's solves not made; proxy solves above tol {si['cv_screen_n_unconverged']}")
    per_px = (c["proxy"] + solves + rest) / n_pix
    fixed = c["stage2_kernels"]
    print(f"{'  to 1596 px (kernels fixed, the rest per px)':44s} {fixed:.0f} + 1596 x {per_px:.2f} = "
          f"{fixed + 1596 * per_px:.0f} s CPU ({(fixed + 1596 * per_px) / 2 / 60:.1f} min on 2 free cores)")
    res = {"cpu": c, "per_px_cpu_s": per_px}
    if exact is not None:
        cg = compare_grids(exact["cv_mse_grid"], m["cv_mse_grid"])
        r = cg["regret"]
        print(f"{'  vs the exact search':44s} same (C, eps, gamma) on {cg['same_fraction']:.3f} of the pixels; exact "
              f"CV-MSE at the screened choice / exact best: median {np.median(r):.4f}, max {r.max():.4f}")
        if "test_rms" in exact and "test_rms" in m:
            print(f"{'  test rms (Teff K, logg, FeH) exact | screened':44s} {np.round(exact['test_rms'], 4).tolist()} | "
                  f"{np.round(m['test_rms'], 4).tolist()}")
        res.update(same_fraction=cg["same_fraction"], regret=r.tolist())
    return res


def _print_astroslam(a: dict, m: dict | None, n_pix: int) -> None:
    """astroslam's time on its pixels, extrapolated to ``n_pix`` and to 1596 px, and the ratios to ``m``."""
    pix = np.asarray(a["pixels"])
    cpu = a.get("train_cpu_s", a.get("cpu_s"))
    print(f"{'astroslam training on ' + str(pix.size) + ' px':44s} {a['train_s']:10.1f} s wall, {cpu:.1f} s CPU "
          f"(workers), {cpu / pix.size:.1f} s CPU per px; to 1596 px (linear in pixels): {cpu / pix.size * 1596:.0f} s CPU "
          f"= {cpu / pix.size * 1596 / 3600:.1f} h")
    print(f"{'  machine load during astroslam (1-min avg)':44s} mean {a['load']['load1_mean']:.2f}")
    if m is None:
        return
    extrap = a["train_s"] * n_pix / pix.size
    cpu_x = cpu * n_pix / pix.size
    print(f"{'astroslam extrapolated to the ' + str(n_pix) + ' px':44s} {extrap:10.1f} s wall, {cpu_x:.1f} s CPU;  "
          f"ratio wall {extrap / m['train_s']:.1f}x, CPU {cpu_x / m['train_cpu_s']:.1f}x")
    r = np.asarray(m["cv_mse_scaled"])[pix] / np.asarray(a["cv_mse_scaled"])
    same = np.mean([all(np.isclose(m[k][p], a[k][i]) for k in ("C", "epsilon", "gamma")) for i, p in enumerate(pix)])
    print(f"{'  CV-MSE mdslam / astroslam on those pixels':44s} median {np.median(r):.4f}, range "
          f"{r.min():.4f}-{r.max():.4f}; same (C, eps, gamma) on {same:.2f} of them")


def simulate_only(args) -> int:
    """``--simulate-prune``: the pruning lines of :func:`_print_simulated` for the saved exact search
    ``--exact-npz`` (run on the default grid), without a fit."""
    from mdslam.slam import DEFAULT_C, DEFAULT_EPSILON, DEFAULT_GAMMA

    if not args.exact_npz:
        raise SystemExit("--simulate-prune needs --exact-npz")
    exact = dict(np.load(args.exact_npz))
    exact["grid"] = {"C": list(DEFAULT_C), "epsilon": list(DEFAULT_EPSILON), "gamma": list(DEFAULT_GAMMA)}
    n_pix = np.shape(exact["cv_mse_grid"])[0]
    print(f"# {args.exact_npz}: exact search on {n_pix} px, {args.folds}-fold CV; cv_prune simulated from its sums")
    _print_simulated(exact, args.folds)
    return 0


def _parse(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-star", type=int, default=1000)
    ap.add_argument("--n-pix", type=int, default=None, help="evenly spaced pixel subset (default: all 1596)")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--astroslam-pixels", type=int, default=16,
                    help="pixels astroslam trains in full, bin centres of the --n-pix subset (0: none)")
    ap.add_argument("--astroslam-json", default=None, help="saved astroslam_subset.json of the same setup")
    ap.add_argument("--cv-prune", type=float, default=None, help="SLAM(cv_prune=F) (default: the exact grid search)")
    ap.add_argument("--compare-prune", type=float, default=None, metavar="F",
                    help="fit twice in one process, exact search then cv_prune=F, and compare the choices")
    ap.add_argument("--cv-screen", default=None, metavar="K|JSON",
                    help='SLAM(cv_screen=...): an int (points kept per pixel) or a JSON dict, e.g. \'{"keep": 5, "n_star": 300}\'')
    ap.add_argument("--simulate-prune", action="store_true",
                    help="no fit: the choices of cv_prune factors and schedules, simulated from --exact-npz's sums")
    ap.add_argument("--exact-npz", default=None, help="a saved exact search (realistic_<n>px_exact.npz) of the same "
                    "pixels: compare the screened choices with it, and rank the --proxy-eval proxies against it")
    ap.add_argument("--proxy-eval", default=None, metavar="M:F,...",
                    help="stage 1 alone on M stars with F folds per item, ranked against --exact-npz (no fit)")
    ap.add_argument("--solver", default="admm", choices=("admm", "admm-smo", "smo"), help="SLAM(solver=...) of the CV solves")
    ap.add_argument("--n-test", type=int, default=200, help="held-out mock stars labelled by each model (0: none)")
    ap.add_argument("--fixed-cost", action="store_true",
                    help="also time the shared kernels and eigendecompositions alone, and split the CPU per pixel")
    ap.add_argument("--keep", default=None, metavar="I,J,...",
                    help="train on these pixels of the --n-pix subset only (indices, comma-separated)")
    ap.add_argument("--skip-mdslam", action="store_true", help="astroslam alone (its pixels of the --n-pix subset)")
    ap.add_argument("--results", default=str(HERE / "results" / "realistic"))
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    outdir = Path(args.results)
    outdir.mkdir(parents=True, exist_ok=True)
    if args.simulate_prune:
        return simulate_only(args)
    d = make_data(args.n_star, args.n_pix)
    test = make_data(args.n_test, args.n_pix, seed=SEED + 1) if args.n_test > 0 and not args.skip_mdslam else None
    if args.keep:
        keep = np.array([int(i) for i in args.keep.split(",")])
        if keep.min() < 0 or keep.max() >= d["flux"].shape[1]:
            raise SystemExit(f"--keep {args.keep}: indices must lie in 0..{d['flux'].shape[1] - 1} (the --n-pix subset)")
        d = {k: v[..., keep] if k != "labels" else v for k, v in d.items()}
        test = None if test is None else {k: v[..., keep] if k != "labels" else v for k, v in test.items()}
    n_star, n_pix = d["flux"].shape
    print(f"# mock LAMOST {n_star} stars x {n_pix} px, {args.folds}-fold CV (unshuffled), n_jobs {args.n_jobs}, "
          f"{os.cpu_count()} cores; load at start {os.getloadavg()[0]:.2f}; "
          f"CPU = user + system of all threads", flush=True)
    out: dict = {"n_star": n_star, "n_pix": n_pix, "folds": args.folds}
    runs: list[dict] = []
    exact = dict(np.load(args.exact_npz)) if args.exact_npz else None
    if args.proxy_eval:
        if exact is None:
            raise SystemExit("--proxy-eval needs --exact-npz")
        out["proxies"] = _print_proxies(exact, d, args.proxy_eval, args.solver, args.n_jobs, args.folds)
    elif args.cv_screen:
        spec = json.loads(args.cv_screen)
        m = run_mdslam(d, args.folds, args.n_jobs, None, args.solver, test, cv_screen=spec)
        _print_mdslam(m, n_pix, args.folds)
        out["screen"] = _print_screen(m, exact, n_pix)
        np.savez(outdir / f"realistic_{n_pix}px_screen.npz", **{k: v for k, v in m.items() if isinstance(v, np.ndarray)})
        out["mdslam_screen"] = {k: v for k, v in m.items() if not isinstance(v, np.ndarray)}
    elif not args.skip_mdslam:
        prunes = [None, args.compare_prune] if args.compare_prune else [args.cv_prune]
        for f in prunes:
            m = run_mdslam(d, args.folds, args.n_jobs, f, args.solver, test)
            _print_mdslam(m, n_pix, args.folds)
            if f is None and m.get("sse_partial") is not None:
                out["simulated_prune"] = _print_simulated(m, args.folds)
            tag = f"prune{f}" if f else "exact"
            np.savez(outdir / f"realistic_{n_pix}px_{tag}.npz", **{k: v for k, v in m.items() if isinstance(v, np.ndarray)})
            out[f"mdslam_{tag}"] = {k: v for k, v in m.items() if not isinstance(v, np.ndarray)}
            runs.append(m)
            if args.fixed_cost and len(runs) == 1:
                out["fixed_cost"] = fixed_cost(d, args.folds, m["grid"]["gamma"])
                _print_fixed(out["fixed_cost"], runs, n_pix)
            sys.stdout.flush()
        if len(runs) == 2:
            out["compare_prune"] = _print_compare(*runs)
            if args.fixed_cost:
                _print_fixed(out["fixed_cost"], runs, n_pix)
    a = None
    if args.astroslam_json:
        a = json.loads(Path(args.astroslam_json).read_text())
        print(f"# astroslam: reusing {args.astroslam_json}, measured {a.get('measured_utc')}")
    elif args.astroslam_pixels > 0:
        from mdslam.slam import DEFAULT_C, DEFAULT_EPSILON, DEFAULT_GAMMA

        grid = {"C": list(DEFAULT_C), "epsilon": list(DEFAULT_EPSILON), "gamma": list(DEFAULT_GAMMA)}
        pix = astroslam_pixels(n_pix, args.astroslam_pixels)
        print(f"# astroslam ({VENV}) on {pix.size} px {pix.tolist()} ...", flush=True)
        a = run_astroslam(d, pix, runs[0]["grid"] if runs else grid, args.folds, outdir)
    if a is not None:
        _print_astroslam(a, runs[-1] if runs else None, n_pix)
        out["astroslam"] = a
    (outdir / "realistic.json").write_text(json.dumps(out, indent=1, default=_jsonable))
    print(f"# wrote {outdir / 'realistic.json'}")
    return 0


def _jsonable(v):
    """JSON form of the numpy values in the results (arrays as lists)."""
    return v.tolist() if isinstance(v, np.ndarray) else float(v)


if __name__ == "__main__":
    sys.exit(main())
