"""SLAM training on the realistic grid: 4 C x 5 epsilon x 6 gamma (120 points), 10-fold CV, mock LAMOST.

1,000 mock LAMOST M dwarfs (``MockSurvey("lamost", seed=2024, snr_median=100)``, known labels)
preprocessed onto the LAMOST grid (1,596 pixels), trained with SLAM's default grid and 10-fold
CV.  The reference is astroslam (the published SLAM code) trained *in full* on a subset of the
pixels (``--astroslam-pixels``, default 16, evenly spaced) with the same stars, grid and folds;
its time for all pixels is extrapolated linearly in the number of pixels (astroslam fits each
pixel independently, so its cost is a sum over pixels; the subset's spread of pixel types is
the extrapolation's uncertainty).  Both use astroslam's folds (``KFold(10)``, unshuffled).

Usage::

    python benchmarks/realistic_grid.py                        # the full problem (mdslam: tens of min)
    python benchmarks/realistic_grid.py --n-star 300 --n-pix 64 --astroslam-pixels 4   # a smoke run
    python benchmarks/realistic_grid.py --astroslam-json RUN.json                      # reuse astroslam

astroslam runs in its own virtual environment (``$ASTROSLAM_VENV``, see ``bench_astroslam.py``).
Prints one line per figure with the ratio (astroslam / mdslam) and the machine load.
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
from bench_astroslam import VENV, LoadSampler, ensure_venv  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 2024
TARGET_S = 15 * 60


def make_data(n_star: int, n_pix: int | None) -> dict:
    """Mock LAMOST training set on the LAMOST grid: flux, ivar (n_star, n_pix), labels (n_star, 3), wave."""
    from mdslam.compendium.tracks import LAMOST_GRID
    from mdslam.mock import MockSurvey
    from mdslam.preprocess import log_lambda_grid, preprocess

    ms = MockSurvey("lamost", seed=SEED, snr_median=100.0, snr_sigma=0.4, logg_scatter=0.05)
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


def run_mdslam(d: dict, folds: int, n_jobs: int, cv_prune: float | None = None, solver: str = "admm") -> dict:
    from sklearn.model_selection import KFold

    from mdslam.slam import SLAM

    model = SLAM(cv=KFold(folds), n_jobs=n_jobs, cv_prune=cv_prune, solver=solver)   # the default 120-point grid
    with LoadSampler() as load:
        t0, c0 = time.perf_counter(), _cpu()
        model.fit(d["flux"], d["labels"], d["ivar"], wavelength=d["wave"])
        dt, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"train_s": dt, "train_cpu_s": cpu, "cv_prune": cv_prune, "solver": solver, "solver_info": model.solver_info_,
            "load": load.summary(), "cv_unconverged": model.cv_unconverged_,
            "grid_points": int(np.prod([len(v) for v in model.param_grid_.values()])),
            "cv_mse_scaled": model.cv_mse_scaled_, "C": model.C_, "epsilon": model.epsilon_,
            "gamma": model.gamma_, "grid": {k: np.asarray(v).tolist() for k, v in model.param_grid_.items()}}


def run_astroslam(d: dict, pix: np.ndarray, grid: dict, folds: int, outdir: Path) -> dict:
    py = ensure_venv()
    data = outdir / "astroslam_subset.npz"
    np.savez(data, wave=d["wave"][pix], flux=d["flux"][:, pix], ivar=d["ivar"][:, pix], labels=d["labels"])
    spec = outdir / "astroslam_grid.json"
    spec.write_text(json.dumps({**grid, "cv": folds}))
    out = outdir / "astroslam_subset.json"
    c0 = _cpu(resource.RUSAGE_CHILDREN)
    with LoadSampler() as load:
        subprocess.run([str(py), str(HERE / "_astroslam_train.py"), str(data), str(spec), "2", str(out)],
                       check=True, capture_output=True)
    res = json.loads(out.read_text())
    res.update(pixels=pix.tolist(), load=load.summary(), cpu_s=_cpu(resource.RUSAGE_CHILDREN) - c0,
               measured_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    out.write_text(json.dumps(res, indent=1))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-star", type=int, default=1000)
    ap.add_argument("--n-pix", type=int, default=None, help="evenly spaced pixel subset (default: all 1596)")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--astroslam-pixels", type=int, default=16, help="pixels astroslam trains in full (0: none)")
    ap.add_argument("--astroslam-json", default=None, help="saved astroslam_subset.json of the same setup")
    ap.add_argument("--cv-prune", type=float, default=None, help="SLAM(cv_prune=F) (default: the exact grid search)")
    ap.add_argument("--solver", default="admm", choices=("admm", "admm-smo", "smo"), help="SLAM(solver=...) of the CV solves")
    ap.add_argument("--results", default=str(HERE / "results" / "realistic"))
    args = ap.parse_args(argv)
    outdir = Path(args.results)
    outdir.mkdir(parents=True, exist_ok=True)
    d = make_data(args.n_star, args.n_pix)
    n_star, n_pix = d["flux"].shape
    print(f"# mock LAMOST {n_star} stars x {n_pix} px, {args.folds}-fold CV (unshuffled), n_jobs {args.n_jobs}, "
          f"{os.cpu_count()} cores; load at start {os.getloadavg()[0]:.2f}", flush=True)
    m = run_mdslam(d, args.folds, args.n_jobs, args.cv_prune, args.solver)
    si = m["solver_info"]
    tgt = "met" if m["train_s"] < TARGET_S else "NOT met"
    print(f"{'mdslam training (CV grid + final fits)':44s} {m['train_s']:10.1f} s   ({m['grid_points']} grid points, "
          f"CPU {m['train_cpu_s']:.1f} s, cv_prune {args.cv_prune})  target < {TARGET_S / 60:.0f} min: {tgt}")
    if n_pix < 1596:
        f = 1596 / n_pix
        print(f"{'  extrapolated to 1596 px (linear in pixels)':44s} {m['train_s'] * f:10.1f} s wall, "
              f"{m['train_cpu_s'] * f:.1f} s CPU")
    if "cv_pruned_fraction" in si:
        print(f"{'CV solves skipped by cv_prune':44s} {si['cv_pruned_fraction']:.3f} of pixel x grid point x fold")
    bad = np.flatnonzero(m["cv_unconverged"])
    print(f"{'pixels with CV solves above tol (count)':44s} "
          + (", ".join(f"{p}: {m['cv_unconverged'][p]}" for p in bad[:40]) if bad.size else "none")
          + (" ..." if bad.size > 40 else ""))
    print(f"{'CV solves above libsvm tol 1e-3':44s} {si['cv_n_unconverged']} of "
          f"{m['grid_points'] * args.folds * n_pix} (pixel x grid point x fold); max KKT gap "
          f"{si['cv_max_kkt_gap']:.2g}; mean ADMM iterations {si['cv_mean_iterations']:.0f}")
    print(f"{'machine load during mdslam (1-min avg)':44s} mean {m['load']['load1_mean']:.2f} "
          f"max {m['load']['load1_max']:.2f}")
    out = {"n_star": n_star, "n_pix": n_pix, "folds": args.folds,
           "mdslam": {k: v for k, v in m.items() if not isinstance(v, np.ndarray)}}
    a = None
    if args.astroslam_json:
        a = json.loads(Path(args.astroslam_json).read_text())
        print(f"# astroslam: reusing {args.astroslam_json}, measured {a.get('measured_utc')}")
    elif args.astroslam_pixels > 0:
        pix = np.linspace(0, n_pix - 1, min(args.astroslam_pixels, n_pix)).round().astype(int)
        print(f"# astroslam ({VENV}) on {pix.size} px ...", flush=True)
        a = run_astroslam(d, pix, m["grid"], args.folds, outdir)
    if a is not None:
        pix = np.asarray(a["pixels"])
        extrap = a["train_s"] * n_pix / pix.size
        print(f"{'astroslam training, extrapolated':44s} {extrap:10.1f} s   ({a['train_s']:.1f} s for {pix.size} px "
              f"x {n_pix}/{pix.size}; n_jobs 2)  ratio {extrap / m['train_s']:.1f}x")
        if "cpu_s" in a:
            cpu_x = a["cpu_s"] * n_pix / pix.size
            print(f"{'astroslam training CPU, extrapolated':44s} {cpu_x:10.1f} s   ({a['cpu_s']:.1f} s for {pix.size} px)"
                  f"  CPU ratio {cpu_x / m['train_cpu_s']:.1f}x")
        r = np.asarray(m["cv_mse_scaled"])[pix] / np.asarray(a["cv_mse_scaled"])
        same = np.mean([all(np.isclose(m[k][p], a[k][i]) for k in ("C", "epsilon", "gamma"))
                        for i, p in enumerate(pix)])
        print(f"{'CV-MSE mdslam / astroslam on those pixels':44s} median {np.median(r):.4f}, range "
              f"{r.min():.4f}-{r.max():.4f}; same (C, eps, gamma) on {same:.2f} of them")
        print(f"{'machine load during astroslam (1-min avg)':44s} mean {a['load']['load1_mean']:.2f}")
        out["astroslam"] = a
        out["ratio_train"] = extrap / m["train_s"]
    (outdir / "realistic.json").write_text(json.dumps(out, indent=1, default=float))
    print(f"# wrote {outdir / 'realistic.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
