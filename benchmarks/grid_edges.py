"""The grid edges of the catalogue's XP model: CV-MSE beyond them and what C = 1000 does to the labels.

Reads the packaged tuning files (``xp_tuned_hyperparameters``, ``xp_nested_folds``) and
prints, without a grid search:

* per outer fold (``--folds``), for the pixels whose own choice in that fold is the largest
  C: the CV-MSE at C = 100, 1000, 1e4, 1e5 (each pixel's epsilon and gamma kept) with
  SLAM's ADMM solver and its record (mean iterations, solves left above the KKT-gap
  tolerance), and with libsvm (``--libsvm``, converges where the ADMM stops at its cap);
  for the pixels at the smallest epsilon: the CV-MSE at epsilon = 1e-4, 1e-3, 1e-2;
* the label-level effect of the largest C: the nested CV rerun on the stored folds
  (``tuning.reevaluate``) as stored and with every C capped at 100, all else equal
  (the reference: the stored choices, in the same run).

Usage (``$MDSLAM_DATA_MIRROR`` set)::

    python benchmarks/grid_edges.py [--folds 0 1] [--libsvm] [--no-labels]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mdslam import validation
from mdslam.compendium import tracks, tuning


def beyond(ts, folds, k: int, solver: str) -> None:
    """Print the C and epsilon probes of outer fold ``k`` (its own choices)."""
    h = tuning.fold_hyperparameters(folds, k)
    chosen = {c: np.asarray(h[c], float) for c in ("C", "epsilon", "gamma")}
    use = np.asarray(h["usable"], bool)
    for name, values, edge in (("C", (100.0, 1000.0, 1e4, 1e5), max(h.meta["grid"]["C"])),
                               ("epsilon", (1e-4, 1e-3, 1e-2), min(h.meta["grid"]["epsilon"]))):
        pix = np.flatnonzero(use & (chosen[name] == edge))
        at = {c: chosen[c][pix] for c in chosen}
        ref = None
        for v in (edge, *(x for x in values if x != edge)):      # the edge value first: the reference
            at[name] = np.full(pix.size, v)
            t0 = time.process_time()
            mse, info = tuning.cv_mse_at(ts, folds, pix, at["C"], at["epsilon"], at["gamma"], outer=[k],
                                         solver=solver)
            ref = mse if ref is None else ref
            print(f"fold {k} {solver:6s} {name}={v:g}: {pix.size} px, median CV-MSE {np.median(mse):.4e}, "
                  f"mean iterations {info['mean_iterations']:.0f}, above tol {info['n_unconverged']} of "
                  f"{info['n_solves']}, CPU {time.process_time() - t0:.1f} s", flush=True)
            if v != edge:
                gain = (ref - mse) / ref
                print(f"    gain over {name}={edge:g}: median {100 * np.median(gain):.2f} %, "
                      f"p90 {100 * np.percentile(gain, 90):.2f} %, > 1 %: {int(np.sum(gain > 0.01))} px")


def labels(ts, folds) -> None:
    """Print the nested-CV label scatter with the stored choices and with C capped at 100."""
    est = {"ml": {"prior": None}, "post_training_cv": {"prior": "training", "chi2_scale": "cv"}}
    for cap in (None, 100.0):
        f = folds.copy()
        if cap is not None:
            f["C"] = np.minimum(np.asarray(f["C"], float), cap)
        t0 = time.process_time()
        s = validation.estimator_summary(tuning.reevaluate(ts, estimators=est, baselines={}, folds=f),
                                         ts.label_names)
        for r in s:
            print(f"C cap {cap}: {r['estimator']:18s} " + "  ".join(
                f"{n} {r[f'rms_{n}']:.4g} (skill {r[f'skill_{n}']:.3f})" for n in ts.label_names)
                + f"  [CPU {time.process_time() - t0:.0f} s]", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folds", type=int, nargs="*", default=[0, 1])
    p.add_argument("--libsvm", action="store_true", help="also solve with libsvm")
    p.add_argument("--no-labels", action="store_true", help="skip the label-level comparison")
    a = p.parse_args()
    ts = tracks.xp_mdwarfs(**tracks.XP_CATALOGUE_WINDOW)
    folds = tuning.nested_folds()
    for k in a.folds:
        for solver in ("admm", "libsvm") if a.libsvm else ("admm",):
            beyond(ts, folds, k, solver)
    if not a.no_labels:
        labels(ts, folds)


if __name__ == "__main__":
    main()
