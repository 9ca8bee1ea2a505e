"""Cost of SLAM's posterior labels (Li 2021 eq. 2) against today's maximum-likelihood labels.

Reference: ``SLAM.predict`` with ``prior=None`` (batched Levenberg-Marquardt from the best
training-label start, Li eq. 3), on the same model, spectra, thread count and process.
Measured: ``prior="training"`` (ML, then the MAP by LM with the prior term, then the
posterior mean and standard deviation by importance sampling on 3**L Gauss-Hermite nodes).
The chi2 scale does not change the work, so a fixed ``chi2_scale`` is used.

Model and spectra: the book's XP-track model (``mdslam.tracks.xp_slam_model``: 343 px,
393 real Gaia XP M dwarfs, book grid, 5-fold CV; trained once and cached), labelling the
393 training spectra tiled ``--tile`` times.  Best of ``--repeat`` runs, one thread.

Usage::

    MDSLAM_DATA_MIRROR=... MDSLAM_CACHE=... python benchmarks/posterior_cost.py [--tile 2] [--repeat 3]
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def _best_time(fn, repeat: int) -> float:
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile", type=int, default=2, help="copies of the 393 XP spectra to label")
    ap.add_argument("--repeat", type=int, default=3, help="runs per estimator (the best is kept)")
    ap.add_argument("--lm-float32", action="store_true", help="both paths with SLAM(lm_float32=True)")
    args = ap.parse_args(argv)

    from mdslam import tracks

    ts = tracks.xp_mdwarfs()
    model, _ = tracks.xp_slam_model(ts)
    model.set_params(n_jobs=1, verbose=False, lm_float32=args.lm_float32)
    flux = np.tile(ts.spectra.flux, (args.tile, 1))
    ivar = np.tile(ts.spectra.ivar, (args.tile, 1))
    n = flux.shape[0]
    ml = model.set_params(prior=None)
    ml.predict(flux[:8], ivar[:8])                                   # warm the caches
    t_ml = _best_time(lambda: ml.predict(flux, ivar), args.repeat)
    post = model.set_params(prior="training", chi2_scale=10.0)
    post.predict(flux[:8], ivar[:8])
    t_post = _best_time(lambda: post.predict(flux, ivar), args.repeat)
    print(f"# {n} XP spectra, {flux.shape[1]} px, 1 thread, best of {args.repeat}, lm_float32={args.lm_float32}; "
          f"load avg {os.getloadavg()[0]:.1f}")
    print(f"maximum likelihood (reference, prior=None): {1e3 * t_ml / n:.2f} ms/spectrum")
    print(f"posterior (prior='training'):               {1e3 * t_post / n:.2f} ms/spectrum, "
          f"ratio {t_post / t_ml:.2f} x the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
