"""Pruning schedules of the CV grid search against the exact search, on the reference problem.

For each synthetic set of ``make_synth.py`` (the reference set, seed 42, and others drawn with
other seeds: other stars, noise and line lists) this runs SLAM's exact grid search (the
reference grid, ``KFold(5)`` unshuffled, every point in every fold) one fold at a time, keeps
each fold's squared-error sums, and replays on them ``cv_prune`` as a single factor (after two
folds) and as the schedules ``harmonic_prune(5, c)`` (``f_k = 1 + c / k`` after every fold
``k``).  A pruned search solves the same problems as the exact one for the points it keeps, so
its choice is the lowest full CV-MSE among them.  One line per (set, rule): the fraction of the
CV solves made, the pixels whose (C, epsilon, gamma) is the exact search's, the pixels whose
CV-MSE at the pruned choice is within 0.5 % of the best, and the largest ratio.

Then, with ``--fit``, ``SLAM.fit`` on the reference set with ``cv_prune=1.2`` and with the
schedule ``harmonic_prune(5, c)`` alternate in separate processes (CPU of the fit).

The realistic grid (120 points, 10 folds) has its own replay: ``realistic_grid.py
--simulate-prune --exact-npz ...``.  Writes ``benchmarks/results/prune_schedule.json``.

Usage::

    python benchmarks/prune_schedule.py                          # sets 42, 1007, 2007 (~1 min each)
    python benchmarks/prune_schedule.py --seeds 42 --fit 2       # and two alternated fits of each rule
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("ASTROSLAM_BENCH_DIR", HERE.parent.parent / "shared" / "bench" / "astroslam"))
GRID = dict(C=(1.0, 10.0), epsilon=(0.05, 0.1), gamma=(0.3, 1.0))
FOLDS = 5


def make_set(results: Path, seed: int) -> Path:
    """``make_synth.py``'s set with ``SEED = seed`` (42: the reference set)."""
    path = results / ("synth.npz" if seed == 42 else f"synth_seed{seed}.npz")
    if not path.exists():
        spec = importlib.util.spec_from_file_location("make_synth", SHARED / "make_synth.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod.SEED = seed
        mod.main(str(path))
    return path


def per_fold_sums(path: Path, n_jobs: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact search's squared-error sums per fold (n_fold, n_C, n_epsilon, n_gamma, n_pix) and test counts (n_fold, n_pix)."""
    from sklearn.model_selection import KFold

    import mdslam.slam.estimator as est
    from mdslam.slam import SLAM

    orig, store = est._grid_search_cv, {}

    def one_fold_at_a_time(Xs, Ys, good, folds, *a, **k):
        k["prune"] = None
        parts = [orig(Xs, Ys, good, [f], *a, **k) for f in folds]
        store["sse"] = np.stack([p[0] for p in parts])
        store["cnt"] = np.stack([p[2] for p in parts])
        sse, se, cnt = (sum(p[i] for p in parts) for i in range(3))
        return sse, se, cnt, parts[-1][3]

    est._grid_search_cv = one_fold_at_a_time
    try:
        d = np.load(path)
        SLAM(**GRID, cv=KFold(FOLDS), tol=1e-3, n_jobs=n_jobs, verbose=False).fit(d["tr_flux"], d["tr_labels"],
                                                                                 d["tr_ivar"])
    finally:
        est._grid_search_cv = orig
    return store["sse"], store["cnt"]


def replay(sse: np.ndarray, cnt: np.ndarray, prune) -> dict:
    """A pruned search's solves and choices from the exact per-fold sums (:func:`mdslam.slam.training.replay_prune`)."""
    from mdslam.slam.training import replay_prune

    n_pix = sse.shape[-1]
    full = (sse.sum(0) / cnt.sum(0)).reshape(-1, n_pix)
    best = full.argmin(0)
    alive, solved = replay_prune(sse, prune, cnt)
    choice = np.where(alive.reshape(-1, n_pix), full, np.inf).argmin(0)
    regret = full[choice, np.arange(n_pix)] / full[best, np.arange(n_pix)]
    return {"solved": solved, "same": float((choice == best).mean()),
            "within_0.5pct": float((regret <= 1.005).mean()), "max_regret": float(regret.max())}


def fit_cpu(path: Path, prune, n_jobs: int) -> float:
    """CPU seconds (user + system, all threads) of ``SLAM.fit`` with ``cv_prune=prune``, in a fresh process."""
    code = f"""
import resource, numpy as np
from sklearn.model_selection import KFold
from mdslam.slam import SLAM
d = np.load({str(path)!r})
m = SLAM(**{GRID!r}, cv=KFold({FOLDS}), tol=1e-3, n_jobs={n_jobs}, cv_prune={prune!r}, verbose=False)
r0 = resource.getrusage(resource.RUSAGE_SELF)
m.fit(d["tr_flux"], d["tr_labels"], d["tr_ivar"], wavelength=d["wave"])
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    from mdslam.slam import harmonic_prune

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="42,1007,2007", help="make_synth.py seeds (42: the reference set)")
    ap.add_argument("--c", default="0.1,0.15,0.2,0.3", help="the c values of harmonic_prune(5, c)")
    ap.add_argument("--factor", type=float, default=1.2, help="the single factor after two folds")
    ap.add_argument("--fit", type=int, default=0, metavar="N",
                    help="then N alternated fits of cv_prune=FACTOR and harmonic_prune(5, --fit-c) on the reference set")
    ap.add_argument("--fit-c", type=float, default=0.2)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--results", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    rules = [(f"cv_prune={args.factor}", args.factor)] + [
        (f"harmonic_prune(5, {c})", harmonic_prune(FOLDS, float(c))) for c in args.c.split(",")]
    out: dict = {"measured_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "sets": {}}
    for seed in (int(s) for s in args.seeds.split(",")):
        path = make_set(results, seed)
        sse, cnt = per_fold_sums(path, args.n_jobs)
        out["sets"][seed] = {}
        for name, prune in rules:
            r = replay(sse, cnt, prune)
            out["sets"][seed][name] = r
            print(f"set {seed:5d}  {name:26s} solves {r['solved']:.3f} of the exact search's; same choice on "
                  f"{r['same']:.4f} of {sse.shape[-1]} px; within 0.5 % {r['within_0.5pct']:.4f}; "
                  f"max CV-MSE ratio {r['max_regret']:.4f}", flush=True)
    if args.fit:
        ref = make_set(results, 42)
        sched = harmonic_prune(FOLDS, args.fit_c)
        cpu = {args.factor: [], args.fit_c: []}
        for _ in range(args.fit):
            cpu[args.factor].append(fit_cpu(ref, args.factor, args.n_jobs))
            cpu[args.fit_c].append(fit_cpu(ref, sched, args.n_jobs))
        a, b = np.mean(cpu[args.factor]), np.mean(cpu[args.fit_c])
        print(f"SLAM.fit CPU, reference set, {args.n_jobs} threads, alternated: cv_prune={args.factor} "
              f"{', '.join(f'{x:.1f}' for x in cpu[args.factor])} s; harmonic_prune(5, {args.fit_c}) "
              f"{', '.join(f'{x:.1f}' for x in cpu[args.fit_c])} s; ratio {a / b:.2f}x; load {os.getloadavg()[0]:.2f}")
        out["fit_cpu_s"] = {str(k): v for k, v in cpu.items()}
    (results / "prune_schedule.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
