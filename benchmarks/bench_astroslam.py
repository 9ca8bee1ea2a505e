"""mdslam vs astroslam (the published SLAM code) on the same synthetic data, same grid, same run.

Follows ``$ASTROSLAM_BENCH_DIR/README.md`` (default ``../shared/bench/astroslam`` beside the
repository): 800 training + 100 test spectra of
1500 pixels (``make_synth.py``), a 2x2x2 grid C=(1, 10), epsilon=(0.05, 0.1),
gamma=(0.3, 1.0) with 5-fold CV, 20 test spectra labelled (quick start + optimiser).
astroslam runs as a subprocess in its own virtual environment (``bench_astroslam.py
synth.npz 2 20 out/``); mdslam runs in this process, after it, on the same files.

mdslam uses astroslam's folds here (``KFold(5)``, unshuffled) so that the per-pixel
CV-MSE can be compared pixel by pixel; its own default is shuffled, seeded folds.

Usage::

    python benchmarks/bench_astroslam.py            # full reference comparison (~0.5-1 h)
    python benchmarks/bench_astroslam.py --quick    # 150 px, 400 training stars (a few min)
    python benchmarks/bench_astroslam.py --skip-astroslam   # reuse the last astroslam result
    python benchmarks/bench_astroslam.py --astroslam-json RUN.json   # a saved astroslam run on the same data
    python benchmarks/bench_astroslam.py --blas-autodetect   # mdslam without an OPENBLAS_CORETYPE pin

astroslam takes 7.5-35 min on 2 cores (7.5 min on an AMD EPYC, Zen 5): run it once (its result
JSON records the data's sha256, the date and the machine load) and pass it with ``--astroslam-json``.  Its labelling
is timed again in every run (CPU time, ``_astroslam_labels.py`` on the saved model dump in
its venv), so that the labels-per-spectrum ratio compares CPU times of the same run; mdslam's
labels are timed on a freshly loaded model for each setting of ``LABEL_CONFIGS``, with and
without the stored start grid (the one-off evaluation of the model at every training label).

Prints one line per figure (ratio = astroslam / mdslam, > 1 means mdslam is better)
and writes ``benchmarks/results/<tag>/bench.json``.  The header names the CPU and the BLAS
kernels of each side: where the environment pins OpenBLAS to AVX2 kernels (``OPENBLAS_CORETYPE``,
``OPENBLAS_L2_SIZE``) for older builds, ``--blas-autodetect`` runs the script again without the pin
for mdslam, while astroslam's processes (an older OpenBLAS) keep it.  Machine load (1-min load average
and CPU pressure) is sampled through both runs and printed: other jobs share the cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _sampling import PeriodicSampler

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("ASTROSLAM_BENCH_DIR", HERE.parent.parent / "shared" / "bench" / "astroslam"))
VENV = Path(os.environ.get("ASTROSLAM_VENV", HERE / "results" / "astroslam-venv"))
#: OpenBLAS settings that ``--blas-autodetect`` lifts from mdslam's process (astroslam's keeps them).
BLAS_PIN_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_PINNED = "MDSLAM_BENCH_ASTROSLAM_BLAS"

SCORE_KEYS = ("cv_mse_scaled", "flux_scale", "flux_mean", "C", "epsilon", "gamma")
GRID = dict(C=(1.0, 10.0), epsilon=(0.05, 0.1), gamma=(0.3, 1.0))
N_TEST = 20


class LoadSampler(PeriodicSampler):
    """Sample the 1-min load average and CPU pressure (PSI 'some avg10') every few seconds."""

    def __init__(self, every: float = 5.0):
        super().__init__(self._probe, every)

    @staticmethod
    def _probe() -> tuple[float, float]:
        psi = np.nan
        try:
            line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
            psi = float(line.split("avg10=")[1].split()[0])
        except (OSError, IndexError, ValueError):
            pass
        return os.getloadavg()[0], psi

    def summary(self) -> dict:
        a = np.array(self.samples) if self.samples else np.full((1, 2), np.nan)
        return {"load1_mean": float(np.nanmean(a[:, 0])), "load1_max": float(np.nanmax(a[:, 0])),
                "cpu_pressure_some_avg10_mean": float(np.nanmean(a[:, 1])) if np.isfinite(a[:, 1]).any()
                else None, "n_samples": len(self.samples)}


def _astroslam_env() -> dict:
    """The environment of astroslam's processes: this one's, with any OpenBLAS pin lifted for mdslam put back."""
    env = dict(os.environ)
    env.update(json.loads(env.pop(_PINNED, "{}")))
    return env


def _machine() -> dict:
    """The CPU, the kernels of each BLAS library loaded here (mdslam's side) and astroslam's OpenBLAS pin."""
    from mdslam.blasinfo import blas_libraries, cpu_model

    return {"cpu": cpu_model(),
            "mdslam_blas": [f"{d.get('internal_api')} {d.get('version')} {d.get('architecture')} kernels"
                            for d in blas_libraries()],
            "astroslam_blas_env": {k: v for k, v in _astroslam_env().items() if k in BLAS_PIN_VARS}}


def _lift_blas_pin(argv: list) -> None:
    """``--blas-autodetect``: run this script again without ``BLAS_PIN_VARS``, so that numpy's OpenBLAS
    picks its kernels from the CPU; astroslam's old numpy and OpenBLAS still run with them."""
    pinned = {k: os.environ[k] for k in BLAS_PIN_VARS if k in os.environ}
    if pinned:
        env = {k: v for k, v in os.environ.items() if k not in BLAS_PIN_VARS}
        env[_PINNED] = json.dumps(pinned)
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv], env)

def ensure_venv() -> Path:
    py = VENV / "bin" / "python"
    if py.exists():
        return py
    print(f"creating the astroslam venv at {VENV} (README recipe)", flush=True)
    subprocess.run(["python3", "-m", "venv", str(VENV)], check=True, env=_astroslam_env())
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "-r", str(SHARED / "requirements.txt")],
                   check=True, env=_astroslam_env())
    utils = next((VENV / "lib").glob("python3.*/site-packages/slam/utils.py"))
    text = utils.read_text().replace(
        "from collections import OrderedDict, Set, Mapping, deque",
        "from collections import OrderedDict, deque\nfrom collections.abc import Set, Mapping")
    utils.write_text(text)
    return py


def make_data(results: Path, quick: bool, pixel_step: int = 1) -> Path:
    """The reference set; ``quick``: every 10th pixel of 400 stars; ``pixel_step`` k: every k-th pixel, all stars."""
    full = results / "synth.npz"
    if not full.exists():
        subprocess.run([sys.executable, str(SHARED / "make_synth.py"), str(full)], check=True)
    if not quick and pixel_step == 1:
        return full
    n_tr = 400 if quick else None
    q = results / ("synth_quick.npz" if quick else f"synth_step{pixel_step}.npz")
    if not q.exists():
        d = dict(np.load(full))
        pix = slice(0, None, 10 if quick else pixel_step)
        out = {"wave": d["wave"][pix]}
        for k in ("tr_flux", "tr_ivar", "tr_flux_true"):
            out[k] = d[k][:n_tr, pix]
        out["tr_labels"] = d["tr_labels"][:n_tr]
        for k in ("te_flux", "te_ivar", "te_flux_true"):
            out[k] = d[k][:, pix]
        out["te_labels"] = d["te_labels"]
        np.savez(q, **out)
    return q


def run_astroslam(py: Path, data: Path, outdir: Path) -> dict:
    outdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    c0 = _cpu(resource.RUSAGE_CHILDREN)
    with LoadSampler() as load, open(outdir / "astroslam.log", "w") as log:
        proc = subprocess.Popen([str(py), str(SHARED / "bench_astroslam.py"), str(data), "2", str(N_TEST),
                                 str(outdir)], stdout=log, stderr=subprocess.STDOUT, env=_astroslam_env())
        workers = _worker_cpu(proc)
        if proc.wait() != 0:
            raise SystemExit(f"astroslam failed (exit {proc.returncode}): see {outdir / 'astroslam.log'}")
    wall = time.perf_counter() - t0
    cpu = _cpu(resource.RUSAGE_CHILDREN) - c0
    res = json.loads((outdir / "astroslam_result.json").read_text())
    subprocess.run([str(py), str(HERE / "_astroslam_scores.py"), str(outdir / "astroslam_model.dump"),
                    str(outdir / "astroslam_scores.npz")], check=True, capture_output=True, env=_astroslam_env())
    res["wall_s"] = wall
    # CPU seconds (user + system) of the whole astroslam process tree, its joblib workers included;
    # the split of the run into training and labelling is astroslam's own wall-clock split
    res["cpu_s"] = cpu
    res["train_cpu_s"] = workers      # its joblib workers: training only (the later phases run n_jobs=1)
    res["load"] = load.summary()
    res["measured_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    res["data_sha256"] = sha256(data)
    sc = np.load(outdir / "astroslam_scores.npz")
    res["scores"] = {k: sc[k].tolist() for k in SCORE_KEYS}
    (outdir / "astroslam_run.json").write_text(json.dumps(res, indent=1))
    return res


def _cpu(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds of this process (all threads) or of its waited-for children."""
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _worker_cpu(proc: subprocess.Popen, every: float = 2.0) -> float:
    """CPU seconds of the joblib worker processes under ``proc``, sampled until ``proc`` exits.

    astroslam trains with ``n_jobs=2`` in worker processes and does everything else in its main
    process, so the workers' CPU is its training CPU (less at most one sampling interval).
    """
    import psutil

    last: dict[int, float] = {}
    main = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for ch in main.children(recursive=True):
                try:
                    t = ch.cpu_times()
                    last[ch.pid] = t.user + t.system
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        time.sleep(every)
    return float(sum(last.values()))


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_astroslam(path: Path, data: Path) -> dict:
    """A saved astroslam run (``astroslam_run.json``), checked to be on the same data file."""
    a = json.loads(Path(path).read_text())
    if "scores" not in a:
        raise SystemExit(f"{path}: no per-pixel 'scores' (an astroslam_run.json written by this script is needed)")
    if a.get("data_sha256") not in (None, sha256(data)):
        raise SystemExit(f"{path}: astroslam ran on other data (sha256 {a['data_sha256'][:12]}... "
                         f"!= {data.name} {sha256(data)[:12]}...)")
    return a


def _prune_arg(text: str):
    """``--cv-prune``: a factor, or ``harmonic[:c]`` (the schedule of :func:`mdslam.slam.harmonic_prune` for 5 folds)."""
    if text.startswith("harmonic"):
        from mdslam.slam import harmonic_prune

        c = text.partition(":")[2]
        return harmonic_prune(5, float(c) if c else 0.2)
    return float(text)


def run_mdslam(data: Path, outdir: Path, n_jobs: int = 2, cv_prune=None) -> dict:
    from sklearn.model_selection import KFold

    import mdslam
    from mdslam.slam import SLAM

    d = np.load(data)
    res = {"mdslam": mdslam.__version__, "numpy": np.__version__, "n_jobs": n_jobs, "cv_prune": cv_prune}
    model = SLAM(**GRID, cv=KFold(5), tol=1e-3, n_jobs=n_jobs, cv_prune=cv_prune, verbose=False)
    with LoadSampler() as load:
        t0, c0 = time.perf_counter(), _cpu()
        model.fit(d["tr_flux"], d["tr_labels"], d["tr_ivar"], wavelength=d["wave"],
                  label_names=["teff", "logg", "m_h"], label_units=["K", "dex", "dex"])
        res["train_s"], res["train_cpu_s"] = time.perf_counter() - t0, _cpu() - c0
        path = outdir / "mdslam_model.npz"
        model.save(path)
        res["model_MB"] = path.stat().st_size / 2**20
        te_f, te_i, te_l = d["te_flux"][:N_TEST], d["te_ivar"][:N_TEST], d["te_labels"][:N_TEST]
        res["labels"], tab = label_timings(path, te_f, te_i, te_l)
        model = SLAM.load(path).set_params(n_jobs=1)
        model.predict_table(te_f[:1], te_i[:1])
        t0 = time.perf_counter()
        tab_all = model.predict_table(d["te_flux"], d["te_ivar"])
        res["labels_per_spec_s_100_warm"] = (time.perf_counter() - t0) / len(tab_all)
        t0 = time.perf_counter()
        for _ in range(20):
            model.predict_flux(te_l[:1])
        res["predict_spectrum_s"] = (time.perf_counter() - t0) / 20
    pred = np.column_stack([tab["teff"], tab["logg"], tab["m_h"]])
    dx = pred - te_l
    res["rms"] = np.sqrt((dx**2).mean(0)).round(4).tolist()
    res["bias"] = dx.mean(0).round(4).tolist()
    pred_all = np.column_stack([tab_all["teff"], tab_all["logg"], tab_all["m_h"]])
    res["rms_100"] = np.sqrt(((pred_all - d["te_labels"]) ** 2).mean(0)).round(4).tolist()
    res["median_formal_err"] = np.median(np.column_stack([tab["e_teff"], tab["e_logg"], tab["e_m_h"]]),
                                         axis=0).round(4).tolist()
    res["lm_converged"] = int(np.sum(tab["converged"]))
    res["solver_info"] = model.solver_info_
    for k in ("C", "epsilon", "gamma"):
        v, c = np.unique(getattr(model, k + "_"), return_counts=True)
        res["best_" + k] = {str(a): int(b) for a, b in zip(v, c, strict=True)}
    res["cv_mse_scaled"] = model.cv_mse_scaled_.tolist()
    res["cv_mse"] = model.cv_mse_.tolist()
    res["load"] = load.summary()
    return res


#: Labelling settings timed by :func:`label_timings`: name -> (SLAM parameters, keep the stored start grid).
LABEL_CONFIGS = {
    "float64 LM (default)": ({}, True),
    "float64 LM, start grid evaluated in the call": ({}, False),
    "lm_sigma_tol=0.01": ({"lm_sigma_tol": 0.01}, True),
    "lm_float32": ({"lm_float32": True}, True),
    "lm_float32 + lm_sigma_tol=0.01": ({"lm_float32": True, "lm_sigma_tol": 0.01}, True),
    "same + lm_damping=nielsen": ({"lm_float32": True, "lm_sigma_tol": 0.01, "lm_damping": "nielsen"}, True),
}


def label_timings(path: Path, flux: np.ndarray, ivar: np.ndarray, truth: np.ndarray, repeats: int = 5):
    """CPU and wall time per spectrum of ``predict_table`` on a freshly loaded model, per :data:`LABEL_CONFIGS`.

    Each setting is timed ``repeats`` times, each time on a model just read from ``path`` (median
    kept: the cores are shared).  "start grid evaluated in the call" drops the stored start grid
    (``quick_flux_``), so the one-off evaluation of the model at every training label is inside
    the timing, as it was for every fresh model before the grid was stored.  Also: the rms against
    the truth and, against the default, the largest label difference in formal errors and
    whether the flags are equal.  Returns (dict per setting, the default's table).
    """
    from mdslam.slam import SLAM

    names = ("teff", "logg", "m_h")
    out, ref = {}, None
    for name, (opts, stored) in LABEL_CONFIGS.items():
        cpu, wall = [], []
        for _ in range(repeats):
            model = SLAM.load(path).set_params(n_jobs=1, **opts)
            if not stored:
                model.quick_flux_ = None
            t0, c0 = time.perf_counter(), _cpu()
            t = model.predict_table(flux, ivar)
            cpu.append((_cpu() - c0) / len(flux))
            wall.append((time.perf_counter() - t0) / len(flux))
        lab = np.column_stack([t[k] for k in names])
        r = {"cpu_s": float(np.median(cpu)), "cpu_s_min": float(np.min(cpu)), "wall_s": float(np.median(wall)),
             "rms": np.sqrt(((lab - truth) ** 2).mean(0)).round(4).tolist(),
             "n_iter_mean": float(np.mean(t["n_iter"])), "options": opts, "stored_start_grid": stored}
        if ref is None:
            ref = t
        else:
            dev = np.column_stack([np.abs(t[k] - ref[k]) / ref[f"e_{k}"] for k in names])
            r["max_dev_formal"] = float(np.nanmax(dev))
            r["flags_equal"] = bool(np.array_equal(t["flag"], ref["flag"]))
        out[name] = r
    return out, ref


def astroslam_label_cpu(py: Path, dump: Path, data: Path, out: Path) -> dict | None:
    """astroslam's CPU per spectrum of labelling (``_astroslam_labels.py`` in its venv), or None without a dump."""
    if not dump.exists():
        return None
    subprocess.run([str(py), str(HERE / "_astroslam_labels.py"), str(dump), str(data), str(N_TEST), str(out)],
                   check=True, capture_output=True, env=_astroslam_env())
    return json.loads(out.read_text())


def exact_cv_check(data: Path, model_path: Path, pixels: np.ndarray, s: dict) -> dict:
    """CV-MSE of the exact SVR (sklearn, tol 1e-9) on pixels where mdslam's is above astroslam's.

    Same standardisation, folds and hyperparameters as mdslam: tells whether the difference is
    mdslam's solver (ratio exact/mdslam < 1) or a difference in the problem astroslam solved.
    """
    from sklearn.model_selection import KFold
    from sklearn.svm import SVR

    from mdslam.slam import SLAM, _standardise

    d = np.load(data)
    m = SLAM.load(model_path)
    Xs, Ys, _ = _standardise(d["tr_flux"], d["tr_labels"], d["tr_ivar"] > 0)
    exact = []
    for p in pixels:
        sse = 0.0
        for tr, te in KFold(5).split(Xs):
            sv = SVR(C=m.C_[p], epsilon=m.epsilon_[p], gamma=m.gamma_[p], tol=1e-9).fit(Xs[tr], Ys[tr, p])
            sse += float(((sv.predict(Xs[te]) - Ys[te, p]) ** 2).sum())
        exact.append(sse / len(Xs))
    exact = np.asarray(exact) * m.flux_scale_[pixels] ** 2
    r_m = exact / m.cv_mse_[pixels]
    r_a = exact / (s["cv_mse_scaled"][pixels] * s["flux_scale"][pixels] ** 2)
    return {"min": float(r_m.min()), "max": float(r_m.max()), "astro_min": float(r_a.min()),
            "astro_max": float(r_a.max())}


def _print_speed(a: dict, m: dict, a_lab: float, a_lab_cpu: float | None) -> None:
    """Training CPU and wall ratios, and labels per spectrum of each labelling setting against astroslam.

    ``a_lab`` is astroslam's wall time per spectrum (its benchmark's), ``a_lab_cpu`` its CPU time
    (``_astroslam_labels.py``, measured in this run; None if it could not run).
    """
    if "train_cpu_s" in a:
        a_cpu = a["train_cpu_s"]
        print(f"{'training CPU time (user + system)':46s} astroslam {a_cpu:10.4g} s  mdslam {m['train_cpu_s']:10.4g} s  "
              f"ratio {a_cpu / m['train_cpu_s']:8.1f}x  target >= 30x: "
              f"{'met' if a_cpu / m['train_cpu_s'] >= 30 else 'NOT met'}")
    print(f"{'training wall time (as above), target 30x':46s} ratio {a['train_s'] / m['train_s']:.1f}x: "
          f"{'met' if a['train_s'] / m['train_s'] >= 30 else 'NOT met'}; mdslam n_jobs {m['n_jobs']}, "
          f"cv_prune {m['cv_prune']}")
    _print_labels(m["labels"], a_lab, a_lab_cpu)


def _print_labels(labels: dict, a_lab: float, a_lab_cpu: float | None) -> None:
    """One line per labelling setting of :func:`label_timings`, with its CPU and wall ratios to astroslam."""
    for name, r in labels.items():
        extra = "" if "max_dev_formal" not in r else (
            f"; vs default: max |dlabel| {r['max_dev_formal']:.3g} formal errors, flags "
            f"{'equal' if r['flags_equal'] else 'DIFFER'}")
        print(f"{'labels per spectrum, ' + name:46s} mdslam CPU {1e3 * r['cpu_s']:.3g} ms (min "
              f"{1e3 * r['cpu_s_min']:.3g}), wall {1e3 * r['wall_s']:.3g} ms, LM iterations {r['n_iter_mean']:.1f}; "
              f"rms {r['rms']}{extra}")
        for kind, a_val in (("CPU", a_lab_cpu), ("wall", a_lab)):
            if a_val is None:
                continue
            ratio = a_val / r["cpu_s" if kind == "CPU" else "wall_s"]
            print(f"{'':46s}   {kind} ratio astroslam {a_val:.4g} s / mdslam: {ratio:7.1f}x  target >= 500x: "
                  f"{'met' if ratio >= 500 else 'NOT met'}")


def _parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="150 pixels, 400 training stars, for development")
    ap.add_argument("--skip-astroslam", action="store_true", help="reuse the last astroslam result")
    ap.add_argument("--astroslam-json", default=None,
                    help="saved astroslam_run.json of a run on the same data (not rerun)")
    ap.add_argument("--results", default=str(HERE / "results"), help="output directory (gitignored)")
    ap.add_argument("--pixel-step", type=int, default=1,
                    help="every k-th pixel, all 800 stars: both codes' cost is a sum over pixels, so the ratios "
                         "hold for the full set (astroslam's full run takes 17-35 min on 2 free cores)")
    ap.add_argument("--n-jobs", type=int, default=2, help="mdslam's worker threads (astroslam runs n_jobs=2)")
    ap.add_argument("--cv-prune", type=_prune_arg, default=None,
                    help="SLAM(cv_prune=F): stop grid points above F x a pixel's best CV-MSE after 2 folds; "
                         "'harmonic' or 'harmonic:c': after every fold k, above (1 + c / k) x the best "
                         "(mdslam.slam.harmonic_prune, c = 0.2 by default)")
    ap.add_argument("--blas-autodetect", action="store_true",
                    help="run mdslam without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (its OpenBLAS picks the kernels "
                         "from the CPU); astroslam's processes keep them")
    ap.add_argument("--labels-only", action="store_true",
                    help="only the labelling figures, on the mdslam model of the last run in the same directory")
    return ap


def labels_only(a: dict, a_cpu: dict | None, data: Path, outdir: Path) -> int:
    """``--labels-only``: the labels-per-spectrum lines for the saved mdslam model of an earlier run."""
    path = outdir / "mdslam_model.npz"
    if not path.exists():
        raise SystemExit(f"{path}: no mdslam model from an earlier run of this benchmark (run it without "
                         "--labels-only first)")
    d = np.load(data)
    with LoadSampler() as load:
        timings, _ = label_timings(path, d["te_flux"][:N_TEST], d["te_ivar"][:N_TEST], d["te_labels"][:N_TEST])
    _print_labels(timings, a["quick_per_spec_s"] + a["multi_per_spec_s"],
                  None if a_cpu is None else a_cpu["labels_cpu_per_spec_s"])
    ld = load.summary()
    print(f"{'machine load during the mdslam labels':46s} mean {ld['load1_mean']:.2f} max {ld['load1_max']:.2f} "
          f"psi {ld['cpu_pressure_some_avg10_mean']} ({os.cpu_count()} cores)")
    out = {"machine": _machine(), "astroslam_labels_this_run": a_cpu, "mdslam_labels": timings, "load": ld,
           "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (outdir / "labels.json").write_text(json.dumps(out, indent=1))
    print(f"\n# wrote {outdir / 'labels.json'}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    if args.blas_autodetect:
        _lift_blas_pin(argv)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    tag = "quick" if args.quick else ("full" if args.pixel_step == 1 else f"step{args.pixel_step}")
    outdir = results / tag
    outdir.mkdir(exist_ok=True)
    data = make_data(results, args.quick, args.pixel_step)
    print(f"# data {data.name}; grid {GRID}; 5-fold CV (astroslam's unshuffled folds for both); "
          f"{N_TEST} test spectra; {platform.node()} {os.cpu_count()} cores, python {platform.python_version()}",
          flush=True)
    machine = _machine()
    print(f"# CPU: {machine['cpu']}; BLAS: mdslam {'; '.join(machine['mdslam_blas'])}; astroslam's processes with "
          f"{machine['astroslam_blas_env'] or 'no OpenBLAS pin'}", flush=True)
    saved = Path(args.astroslam_json) if args.astroslam_json else (
        outdir / "astroslam_run.json" if args.skip_astroslam else None)
    if saved is not None and saved.exists():
        a = load_astroslam(saved, data)
        print(f"# astroslam: reusing {saved.name}, measured {a.get('measured_utc', '(date not recorded)')}",
              flush=True)
    else:
        py = ensure_venv()
        print(f"# astroslam {VENV} running ...", flush=True)
        a = run_astroslam(py, data, outdir)
    a_dir = saved.parent if saved is not None and saved.exists() else outdir
    a_cpu = astroslam_label_cpu(VENV / "bin" / "python", a_dir / "astroslam_model.dump", data,
                                outdir / "astroslam_labels.json") if (VENV / "bin" / "python").exists() else None
    print(f"# astroslam labelling CPU time measured in this run: "
          f"{'no (no model dump or venv)' if a_cpu is None else a_cpu}", flush=True)
    if args.labels_only:
        return labels_only(a, a_cpu, data, outdir)
    print("# mdslam running ...", flush=True)
    m = run_mdslam(data, outdir, args.n_jobs, args.cv_prune)
    s = {k: np.asarray(v) for k, v in a["scores"].items()}
    a_cv = s["cv_mse_scaled"] * s["flux_scale"] ** 2          # flux units
    m_cv = np.asarray(m["cv_mse"])
    ratio_cv = m_cv / a_cv
    a_lab = a["quick_per_spec_s"] + a["multi_per_spec_s"]
    lines = {
        "training time": (a["train_s"], m["train_s"], "s", 30),
        "model file size": (a["dump_MB"], m["model_MB"], "MB", 5),
        "one forward-model spectrum": (a["predict_spectrum_s"], m["predict_spectrum_s"], "s", None),
    }
    print()
    for name, (va, vm, unit, target) in lines.items():
        tgt = "" if target is None else f"  target >= {target}x: {'met' if va / vm >= target else 'NOT met'}"
        print(f"{name:46s} astroslam {va:10.4g} {unit:2s} mdslam {vm:10.4g} {unit:2s} ratio {va / vm:8.1f}x{tgt}")
    _print_speed(a, m, a_lab, None if a_cpu is None else a_cpu["labels_cpu_per_spec_s"])
    print(f"{'test rms (Teff K, logg, [M/H]), 20 spectra':46s} astroslam {a['rms']}  mdslam {m['rms']}")
    print(f"{'test bias (Teff K, logg, [M/H]), 20 spectra':46s} astroslam {a['bias']}  mdslam {m['bias']}")
    print(f"{'CV-MSE per pixel, mdslam <= astroslam':46s} {np.mean(ratio_cv <= 1):.3f} of pixels strictly; "
          f"{np.mean(ratio_cv <= 1.005):.3f} within 0.5%; median ratio {np.median(ratio_cv):.5f}, "
          f"range {ratio_cv.min():.4f}-{ratio_cv.max():.4f}")
    worse = np.flatnonzero(ratio_cv > 1.005)
    if worse.size:
        chk = exact_cv_check(data, outdir / "mdslam_model.npz", worse[:20], s)
        print(f"{'  where mdslam > astroslam + 0.5%: exact SVR':46s} {worse.size} px; CV-MSE of sklearn SVR at "
              f"tol 1e-9 (same folds, same C/eps/gamma) / mdslam: {chk['min']:.4f}-{chk['max']:.4f}; "
              f"/ astroslam: {chk['astro_min']:.4f}-{chk['astro_max']:.4f}")
    mz = np.load(outdir / "mdslam_model.npz")
    agree = np.mean((s["C"] == mz["C"]) & (s["epsilon"] == mz["epsilon"]) & (s["gamma"] == mz["gamma"]))
    print(f"{'same (C, eps, gamma) chosen as astroslam':46s} {agree:.3f} of pixels")
    print(f"{'chosen gamma (astroslam | mdslam)':46s} "
          f"{dict(zip(*map(lambda x: x.tolist(), np.unique(s['gamma'], return_counts=True)), strict=True))} | "
          f"{m['best_gamma']}")
    print(f"{'mdslam CV solves: mean ADMM iterations':46s} {m['solver_info']['cv_mean_iterations']:.0f}; "
          f"max KKT gap {m['solver_info']['cv_max_kkt_gap']:.2g} (libsvm tol 1e-3); final fits max gap "
          f"{m['solver_info']['refit_max_kkt_gap']:.2g}")
    la, lm = a["load"], m["load"]
    print(f"{'machine load during run (1-min load avg, PSI)':46s} astroslam mean {la['load1_mean']:.2f} "
          f"max {la['load1_max']:.2f} psi {la['cpu_pressure_some_avg10_mean']}; mdslam mean "
          f"{lm['load1_mean']:.2f} max {lm['load1_max']:.2f} psi {lm['cpu_pressure_some_avg10_mean']} "
          f"({os.cpu_count()} cores)")
    out = {"machine": _machine(), "astroslam": a, "astroslam_labels_this_run": a_cpu,
           "mdslam": {k: v for k, v in m.items() if k not in ("cv_mse", "cv_mse_scaled")},
           "cv_mse_ratio": {"frac_le": float(np.mean(ratio_cv <= 1)),
                            "frac_le_0.5pct": float(np.mean(ratio_cv <= 1.005)),
                            "median": float(np.median(ratio_cv))}}
    (outdir / "bench.json").write_text(json.dumps(out, indent=1))
    print(f"\n# wrote {outdir / 'bench.json'}")
    shutil.rmtree(outdir / "__pycache__", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
