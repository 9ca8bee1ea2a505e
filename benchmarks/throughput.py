"""Throughput of batch labelling (mdslam.batch): spectra per second per core, memory, workers.

Prints one line per figure with its ratio against a named reference run measured in the
same process, and writes ``benchmarks/results/throughput.json``; ``--book`` then draws the
figure and the table of ``book/scaling.md`` from that JSON (no computation).

Models
------
* **reference model**: the XP-track model of the book (``mdslam.tracks.xp_slam_model``:
  343 px, 393 training stars, Teff/log g/[M/H]), labelling the real XP training spectra
  (tiled).
* **realistic model**: 1596 px like LAMOST (6147-8888 A), 1000 *mock* training stars
  (``MockSurvey("lamost", seed=2024, snr_median=100)``), Teff/log g/[M/H], grid
  C = (1, 10), epsilon = 0.05, gamma = (0.3, 1), 3-fold CV. Trained once (~10 min on
  2 cores) and cached in ``benchmarks/results/realistic_lamost_1000.npz``.

Runs (all mock spectra: ``MockSurvey("lamost", seed=7)``, B20 labels, SNR median 30,
generated, preprocessed onto the model grid and labelled chunk by chunk; nothing is
written but the catalogue):

* predict only, in process, 1 thread (the reference for the per-spectrum cost);
* the whole stream (generate + preprocess + label + write), in process, 1 thread
  (**the reference for the speed-ups**);
* the stream on a Dask LocalCluster of 1 and of 2 single-threaded worker processes;
* ``--n-large`` (default 100,000) spectra streamed on a 2-worker LocalCluster into a
  Parquet catalogue, with the memory of the process tree and the load average sampled
  every 5 s.

Usage (with ``$MDSLAM_DATA_MIRROR`` pointing at the data mirror)::

    python benchmarks/throughput.py            # all (~20 min)
    python benchmarks/throughput.py --skip-large                                      # ~5 min
    python benchmarks/throughput.py --only-large --n-large 100000
    python benchmarks/throughput.py --book      # figure + table for book/scaling.md from the JSON
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):   # one core per worker
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _sampling import PeriodicSampler  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
JSON_PATH = RESULTS / "throughput.json"
BOOK = HERE.parent / "book"
FIGURE = BOOK / "scaling_throughput.png"
PAGE = BOOK / "scaling.md"

REALISTIC_MODEL = RESULTS / "realistic_lamost_1000.npz"
REALISTIC_GRID = dict(C=(1.0, 10.0), epsilon=(0.05,), gamma=(0.3, 1.0))
REALISTIC_N_TRAIN = 1000
REALISTIC_SEED = 2024
STREAM_SEED = 7
N_SURVEY = 600_000                     # LAMOST DR6 M dwarf spectra (order of magnitude)


# --------------------------------------------------------------------------- #
# machine, memory and load
# --------------------------------------------------------------------------- #
def machine() -> dict:
    cpu = "unknown"
    try:
        m = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    import dask
    import numpy

    import mdslam
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "numpy": numpy.__version__, "dask": dask.__version__, "mdslam": mdslam.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "host": platform.node(), "blas_threads_per_worker": 1}


def rss_tree_mb(pid: int | None = None) -> float:
    """Resident memory of a process and all its descendants, MB."""
    import psutil

    p = psutil.Process(pid or os.getpid())
    total = 0
    for q in [p, *p.children(recursive=True)]:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


class Sampler(PeriodicSampler):
    """Samples (seconds, RSS of the process tree MB, 1-min load average, progress) every ``dt`` s."""

    def __init__(self, dt: float = 5.0, progress=None):
        super().__init__(self._probe, dt)
        self.progress = progress
        self._t0 = time.perf_counter()

    def __enter__(self):
        self._t0 = time.perf_counter()
        return super().__enter__()

    def _probe(self) -> tuple:
        done = self.progress() if self.progress else None
        return time.perf_counter() - self._t0, rss_tree_mb(), os.getloadavg()[0], done

    def load(self) -> dict:
        la = np.array([s[2] for s in self.samples]) if self.samples else np.array([np.nan])
        return {"mean": float(np.mean(la)), "max": float(np.max(la))}


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- #
# models
# --------------------------------------------------------------------------- #
def lamost_grid() -> np.ndarray:
    from mdslam.tracks import LAMOST_GRID

    from mdslam.preprocess import log_lambda_grid
    return log_lambda_grid(**LAMOST_GRID)


def train_realistic_model(path: Path = REALISTIC_MODEL, n_train: int = REALISTIC_N_TRAIN, cv: int = 3,
                          n_jobs: int = 2) -> dict:
    """Train the realistic model on mock spectra and save it (with a JSON of how)."""
    from mdslam.mock import MockSurvey
    from mdslam.preprocess import preprocess
    from mdslam.slam import SLAM

    ms = MockSurvey("lamost", seed=REALISTIC_SEED, snr_median=100.0, snr_sigma=0.4, logg_scatter=0.05)
    spec, truth = ms.generate(n_train)
    pp = preprocess(spec, grid=lamost_grid(), rv=np.asarray(truth["rv_true"]), progress=False)
    y = np.column_stack([truth["teff_true"], truth["logg_true"], truth["feh_true"]])
    t0 = time.perf_counter()
    model = SLAM(cv=cv, random_state=0, n_jobs=n_jobs, verbose=True, **REALISTIC_GRID)
    model.fit(pp.flux, y, pp.ivar, wavelength=pp.wavelength, label_names=["teff", "logg", "fe_h"],
              label_units=["K", "dex", "dex"])
    dt = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    info = dict(n_train=n_train, n_pix=int(pp.flux.shape[1]), grid=REALISTIC_GRID, cv=cv, train_seconds=dt,
                mock="MockSurvey('lamost', seed=2024, snr_median=100, snr_sigma=0.4, logg_scatter=0.05)")
    path.with_suffix(".json").write_text(json.dumps(info, indent=1))
    return info


def realistic_model():
    from mdslam.slam import SLAM
    if not REALISTIC_MODEL.exists():
        print(f"# training the realistic model (cached in {REALISTIC_MODEL}) ...", flush=True)
        train_realistic_model()
    return SLAM.load(REALISTIC_MODEL)


def stream_survey():
    from mdslam.mock import MockSurvey
    return MockSurvey("lamost", seed=STREAM_SEED)


# --------------------------------------------------------------------------- #
# measurements
# --------------------------------------------------------------------------- #
RESULTS_DOC: dict = {}


def report(name: str, value: float, unit: str, ref: str | None = None, ref_value: float | None = None,
           higher_is_better: bool = True, **extra) -> None:
    ratio = None
    line = f"{name:58s} {value:12.4g} {unit:12s}"
    if ref is not None and ref_value:
        ratio = value / ref_value
        line += f"  ratio {ratio:7.3f} vs {ref}"
    print(line, flush=True)
    RESULTS_DOC.setdefault("figures", {})[name] = dict(value=value, unit=unit, reference=ref, ratio=ratio,
                                                       **extra)


def timed_batch(model, source, *, engine="inprocess", n_workers=None, scheduler=None, threads=1,
                chunk_size=256, out_suffix=".parquet") -> tuple[float, object]:
    from mdslam.batch import predict_batch

    with tempfile.TemporaryDirectory(dir=RESULTS) as d:
        c0, w0 = cpu_seconds(), worker_cpu_seconds(scheduler)
        t0 = time.perf_counter()
        res = predict_batch(model, source, Path(d) / f"cat{out_suffix}", chunk_size=chunk_size, engine=engine,
                            n_workers=n_workers, scheduler=scheduler, threads=threads, progress=False)
        wall = time.perf_counter() - t0
        res.cpu_seconds = cpu_seconds() - c0 + worker_cpu_seconds(scheduler) - w0
        return wall, res


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _proc_cpu() -> float:
    import psutil
    t = psutil.Process().cpu_times()
    return t.user + t.system


def worker_cpu_seconds(client) -> float:
    """CPU seconds used so far by the workers of a Dask client (0 without one)."""
    if client is None or isinstance(client, str):
        return 0.0
    return float(sum(client.run(_proc_cpu).values()))


def bench_reference_model(n_target: int = 2000) -> None:
    from mdslam.tracks import xp_slam_model

    from mdslam.batch import ArraySource

    model, ts = xp_slam_model()
    model.set_params(n_jobs=1, verbose=False)
    sp = ts.spectra
    reps = -(-n_target // len(sp))
    flux = np.tile(sp.flux, (reps, 1))[:n_target]
    ivar = np.tile(np.where(sp.mask, 0.0, sp.ivar), (reps, 1))[:n_target]
    model.predict_table(flux[:64], ivar[:64])                       # warm-up (quick-start grid)
    t0 = time.perf_counter()
    model.predict_table(flux, ivar)
    dt_pred = time.perf_counter() - t0
    ref = "reference model, predict_table, in process, 1 thread"
    rate_pred = n_target / dt_pred
    report(ref, rate_pred, "spectra/s", n_pix=int(flux.shape[1]), n_train=int(model.X_train_.shape[0]))
    dt, res = timed_batch(model, ArraySource(flux, ivar), chunk_size=500)
    report("reference model, predict_batch (chunks + Parquet), 1 thread", n_target / dt, "spectra/s", ref,
           rate_pred)
    RESULTS_DOC["reference_model"] = dict(n_pix=int(flux.shape[1]), n_train=int(model.X_train_.shape[0]),
                                          labels=list(model.label_names_), n_spectra=n_target,
                                          rate_predict_1thread=rate_pred, rate_batch_1thread=n_target / dt)


def bench_realistic_model(n_predict: int = 512, n_stream: int = 1024, n_cluster1: int = 768,
                          n_cluster2: int = 1536) -> None:
    from dask.distributed import Client

    from mdslam.batch import MockSource, local_cluster
    from mdslam.preprocess import preprocess

    model = realistic_model()
    model.set_params(n_jobs=1, verbose=False)
    ms = stream_survey()
    spec, truth = ms.generate(n_predict, start=10_000_000)
    t0 = time.perf_counter()
    pp = preprocess(spec, grid=model.wavelength_, rv=np.asarray(truth["rv_true"]), progress=False)
    dt_prep = time.perf_counter() - t0
    t0 = time.perf_counter()
    spec2, _ = ms.generate(n_predict, start=20_000_000)
    dt_gen = time.perf_counter() - t0
    model.predict_table(pp[:32])                                    # warm-up
    t0 = time.perf_counter()
    tab = model.predict_table(pp)
    dt_pred = time.perf_counter() - t0
    ref_pred = "realistic model, predict_table, in process, 1 thread"
    r_pred = n_predict / dt_pred
    report(ref_pred, r_pred, "spectra/s", n_iter_mean=float(np.mean(tab["n_iter"])))
    report("mock generation, 1 thread", n_predict / dt_gen, "spectra/s", ref_pred, r_pred)
    report("preprocess onto 1596 px, 1 thread", n_predict / dt_prep, "spectra/s", ref_pred, r_pred)

    ref = "realistic model, whole stream, in process, 1 thread"
    dt, res = timed_batch(model, MockSource(ms, n=n_stream), chunk_size=256)
    r1 = n_stream / dt
    report(ref, r1, "spectra/s", ref_pred, r_pred, cpu_s_per_spectrum=res.cpu_seconds / n_stream)
    cpu_ref = "in process, CPU time"
    report("  CPU seconds per spectrum, whole stream in process", 1e3 * res.cpu_seconds / n_stream, "ms")
    cpu1 = res.cpu_seconds / n_stream
    cores = {}
    for nw, n in ((1, n_cluster1), (2, n_cluster2)):
        with local_cluster(nw) as cl, \
                Client(cl) as client:
            t0 = time.perf_counter()
            timed_batch(REALISTIC_MODEL, MockSource(ms, n=64 * nw, start=5_000_000), engine="dask",
                        scheduler=client, chunk_size=64)        # warm-up: model + templates in each worker
            warm = time.perf_counter() - t0
            dt, res = timed_batch(REALISTIC_MODEL, MockSource(ms, n=n), engine="dask", scheduler=client,
                                  chunk_size=128)
            worker_rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        cores[nw] = n / dt
        report(f"realistic model, stream on LocalCluster, {nw} worker(s)", n / dt, "spectra/s", ref, r1,
               warmup_s=warm, worker_peak_rss_mb=max(worker_rss.values()),
               cpu_s_per_spectrum=res.cpu_seconds / n)
        report(f"  CPU seconds per spectrum, LocalCluster {nw} worker(s)", 1e3 * res.cpu_seconds / n, "ms",
               cpu_ref, 1e3 * cpu1)
    report("speed-up 2 workers vs 1 worker (LocalCluster)", cores[2] / cores[1], "x", None, None)
    RESULTS_DOC["realistic_model"] = dict(
        n_pix=int(model.wavelength_.size), n_train=int(model.X_train_.shape[0]), labels=list(model.label_names_),
        grid=REALISTIC_GRID, ms_per_spectrum=dict(generate=1e3 * dt_gen / n_predict,
                                                  preprocess=1e3 * dt_prep / n_predict,
                                                  predict=1e3 * dt_pred / n_predict),
        rate_stream_inprocess_1thread=r1, rate_cluster={str(k): v for k, v in cores.items()},
        cpu_ms_per_spectrum_stream_inprocess=1e3 * cpu1,
        speedup_2_vs_1=cores[2] / cores[1], lm_iterations_mean=float(np.mean(tab["n_iter"])))


def bench_large(n: int = 100_000, chunk_size: int = 1000, keep: bool = False,
                model_options: dict | None = None) -> None:
    from dask.distributed import Client

    from mdslam.batch import MockSource, local_cluster

    realistic_model()
    out = RESULTS / "mock_100k_labels.parquet"
    work = RESULTS / "mock_100k_labels.parquet.parts"
    if out.exists():
        out.unlink()
    import shutil
    shutil.rmtree(work, ignore_errors=True)
    progress = {"n": 0}

    def done_parts():
        return sum(1 for _ in work.glob("chunk_*.fits")) * chunk_size if work.exists() else 0

    t0 = time.perf_counter()
    with local_cluster(2) as cl, \
            Client(cl) as client, Sampler(5.0, done_parts) as sampler:
        from mdslam.batch import predict_batch
        c0, w0 = cpu_seconds(), worker_cpu_seconds(client)
        res = predict_batch(REALISTIC_MODEL, MockSource(stream_survey(), n=n), out, chunk_size=chunk_size,
                            engine="dask", scheduler=client, progress=True, model_options=model_options)
        cpu_driver = cpu_seconds() - c0
        cpu = cpu_driver + worker_cpu_seconds(client) - w0
        worker_rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    wall = time.perf_counter() - t0
    progress["n"] = n
    rss = np.array([s[1] for s in sampler.samples])
    done = np.maximum.accumulate(np.array([s[3] for s in sampler.samples], float))  # parts vanish at the end
    early = rss[(done > 0.05 * n) & (done < 0.25 * n)]
    late = rss[done > 0.75 * n]
    rate = n / wall
    import pyarrow.parquet as pq
    t = pq.read_table(out).to_pydict()
    flag = np.asarray(t["flag"])
    ok = flag == 0
    acc = {}
    for a, b in (("teff", "teff_true"), ("logg", "logg_true"), ("fe_h", "feh_true")):
        d = np.asarray(t[a])[ok] - np.asarray(t[b])[ok]
        acc[a] = dict(median=float(np.median(d)), robust_sigma=float(1.4826 * np.median(np.abs(d - np.median(d)))))
    ref = "realistic model, stream on LocalCluster, 2 worker(s)"
    ref_val = RESULTS_DOC.get("figures", {}).get(ref, {}).get("value")
    report(f"{n} mock spectra, LocalCluster 2 workers, Parquet", rate, "spectra/s", ref if ref_val else None,
           ref_val, wall_s=wall)
    report(f"{n} mock spectra: wall time", wall / 60, "min", None, None, target_min=15.0)
    report("  CPU seconds per spectrum (driver + workers)", 1e3 * cpu / n, "ms")
    report("  of which the driver (this process: Dask scheduler, part files, catalogue)", 1e3 * cpu_driver / n, "ms")
    report("  memory of the process tree, peak", float(rss.max()), "MB", None, None)
    if early.size and late.size:
        report("  memory at 75-100% vs at 5-25% of the spectra", float(np.median(late)), "MB",
               "memory at 5-25%", float(np.median(early)))
    report("  1-min load average during the run (mean)", sampler.load()["mean"], "", None, None,
           max=sampler.load()["max"])
    per_worker = rate / 2
    RESULTS_DOC["large"] = dict(
        n=n, chunk_size=chunk_size, options=model_options or {}, wall_s=wall, cpu_s=cpu, cpu_driver_s=cpu_driver,
        rate=rate, rate_per_worker=per_worker, cpu_ms_per_spectrum=1e3 * cpu / n,
        peak_rss_tree_mb=float(rss.max()), rss_early_mb=float(np.median(early)) if early.size else None,
        rss_late_mb=float(np.median(late)) if late.size else None, worker_peak_rss_mb=max(worker_rss.values()),
        driver_peak_rss_mb=maxrss_mb(), load=sampler.load(), n_failed=int(res.n_failed_spectra),
        n_unflagged=int(ok.sum()), accuracy_unflagged=acc, failed_chunks=len(res.failed_chunks),
        samples=[list(map(float, s[:3])) + [float(s[3])] for s in sampler.samples])
    print(f"#   unflagged {ok.sum()} of {n}; teff - truth: median {acc['teff']['median']:.1f} K, "
          f"robust sigma {acc['teff']['robust_sigma']:.1f} K; [M/H]: {acc['fe_h']['median']:+.3f}, "
          f"{acc['fe_h']['robust_sigma']:.3f} dex (mock)", flush=True)
    if not keep:
        out.unlink()


def bench_lm_precision(n: int = 1000, fast: dict | None = None) -> None:
    """Labels of ``n`` mock spectra by the realistic model: float64 LM (reference) vs ``fast`` options.

    ``fast`` defaults to ``{"lm_float32": True}``; the reference uses the model's own settings.

    CPU time per spectrum of ``predict_table`` in this process (one thread), label differences in
    units of the float64 formal errors, and the scatter of both against the mock truth.
    """
    from mdslam.preprocess import preprocess

    model = realistic_model()
    model.set_params(n_jobs=1, verbose=False)
    spec, truth = stream_survey().generate(n)
    pp = preprocess(spec, grid=lamost_grid(), rv=np.asarray(truth["rv_true"]), progress=False)
    names = ("teff", "logg", "fe_h")
    tabs, cpu = {}, {}
    fast = fast or {"lm_float32": True}
    ref = {k: model.get_params()[k] for k in fast}
    for f32 in (False, True):
        model.set_params(**(fast if f32 else ref))
        model.predict_table(pp.flux[:8], pp.ivar[:8])                 # caches
        c0 = cpu_seconds()
        tabs[f32] = model.predict_table(pp.flux, pp.ivar)
        cpu[f32] = (cpu_seconds() - c0) / n
    t64, t32 = tabs[False], tabs[True]
    report("realistic model labels, float64 LM (reference), CPU", 1e3 * cpu[False], "ms/spectrum")
    report(f"realistic model labels, {fast}, CPU", 1e3 * cpu[True], "ms/spectrum",
           "float64 LM", 1e3 * cpu[False], higher_is_better=False)
    ok = t64["converged"] & t32["converged"]
    d = np.column_stack([np.abs(t32[k] - t64[k]) / t64[f"e_{k}"] for k in names])[ok].max(axis=1)
    report("  |label difference| / formal error, 99th percentile", float(np.percentile(d, 99)), "",
           max=float(d.max()), n_compared=int(ok.sum()), n_above_0p1=int((d > 0.1).sum()))
    for k, tk in zip(names, ("teff_true", "logg_true", "feh_true"), strict=True):
        r = [float(1.4826 * np.median(np.abs(t[k][ok] - truth[tk][ok] - np.median(t[k][ok] - truth[tk][ok]))))
             for t in (t64, t32)]
        report(f"  {k} - truth robust sigma, lm_float32", r[1], "", f"float64 LM ({r[0]:.4g})", r[0],
               higher_is_better=False)
    diff = np.asarray(t64["flag"]) ^ np.asarray(t32["flag"])
    print(f"#   load average {os.getloadavg()[0]:.1f}; flags differ on {int(np.sum(diff != 0))} of {n} spectra "
          f"({int(np.sum((diff != 0) & (diff != 2)))} in a bit other than NOT_CONVERGED); LM iterations "
          f"{np.mean(t64['n_iter']):.1f} vs {np.mean(t32['n_iter']):.1f} per spectrum", flush=True)


def extrapolate() -> None:
    """600,000 spectra: on this 2-core machine, and on N workers at the measured efficiency."""
    large = RESULTS_DOC.get("large")
    real = RESULTS_DOC.get("realistic_model")
    if not real:
        return
    rate2 = large["rate"] if large else real["rate_cluster"]["2"]
    rate1 = real["rate_cluster"]["1"]
    eff = min(rate2 / (2 * rate1), 1.0)
    ext = {"n": N_SURVEY, "rate_2core_machine": rate2, "per_worker": rate1, "efficiency_2_workers": eff,
           "hours_one_2core_machine": N_SURVEY / rate2 / 3600,
           "hours_on_N_workers": {str(nw): N_SURVEY / (nw * rate1 * eff) / 3600 for nw in (4, 16, 64, 256)}}
    RESULTS_DOC["extrapolation"] = ext
    report(f"{N_SURVEY} spectra on one 2-core machine (extrapolated)", ext["hours_one_2core_machine"], "h",
           None, None)
    for nw, h in ext["hours_on_N_workers"].items():
        report(f"{N_SURVEY} spectra on {nw} workers (extrapolated, eff {eff:.2f})", h, "h",
               "one 2-core machine", ext["hours_one_2core_machine"])


# --------------------------------------------------------------------------- #
# book figure and table (from the JSON only)
# --------------------------------------------------------------------------- #
def book_outputs(doc: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref, real, large = doc.get("reference_model", {}), doc.get("realistic_model", {}), doc.get("large", {})
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    ax = axes[0]
    names, vals = [], []
    if ref:
        names += ["reference\n(XP, 343 px)"]
        vals += [ref["rate_predict_1thread"]]
    if real:
        names += ["realistic\n(1596 px)\nlabel only", "realistic\nwhole stream"]
        vals += [1e3 / real["ms_per_spectrum"]["predict"], real["rate_stream_inprocess_1thread"]]
    ax.bar(range(len(vals)), vals, color=["0.6", "C0", "C1"][:len(vals)])
    ax.set_xticks(range(len(vals)), names, fontsize=8)
    ax.set_ylabel("spectra / s / core")
    for i, v in enumerate(vals):
        ax.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_title("(a) throughput, 1 core", fontsize=10)
    ax = axes[1]
    if real:
        w = np.array([0, 1, 2])
        r = np.array([0, real["rate_cluster"]["1"], real["rate_cluster"]["2"]])
        ax.plot(w, w * real["rate_cluster"]["1"], "k:", label="linear")
        ax.plot(w[1:], r[1:], "o-", color="C1", label="LocalCluster")
        if large:
            ax.plot([2], [large["rate"]], "s", color="C3", label=f"{large['n'] // 1000}k run")
        ax.set_xlim(0, 2.3)
        ax.set_ylim(0, None)
        ax.set_xticks([1, 2])
        ax.legend(fontsize=8)
    ax.set_xlabel("workers (1 core each)")
    ax.set_ylabel("spectra / s")
    ax.set_title("(b) speed-up", fontsize=10)
    ax = axes[2]
    if large and large.get("samples"):
        s = np.array(large["samples"])
        s = s[s[:, 3] > 0]                                   # from the first finished chunk on
        ax.plot(s[:, 3] / 1e3, s[:, 1], ".-", color="C3", ms=3)
        ax.set_ylim(0, 1.3 * s[:, 1].max())
        ax.set_xlabel("spectra labelled (thousands)")
    ax.set_ylabel("memory of all processes (MB)")
    ax.set_title("(c) memory while streaming", fontsize=10)
    fig.suptitle("MOCK spectra (mdslam.mock, LAMOST-like), " + doc.get("machine", {}).get("date", ""),
                 fontsize=9)
    fig.tight_layout()
    FIGURE.parent.mkdir(exist_ok=True)
    fig.savefig(FIGURE, dpi=90)
    print(f"wrote {FIGURE} ({FIGURE.stat().st_size / 1024:.0f} kB)")
    if PAGE.exists():
        text = PAGE.read_text()
        a, b = "<!-- throughput-table:start -->", "<!-- throughput-table:end -->"
        if a in text and b in text:
            table = _table(doc)
            text = text[:text.index(a) + len(a)] + "\n" + table + "\n" + text[text.index(b):]
            PAGE.write_text(text)
            print(f"updated the table in {PAGE}")


def _table(doc: dict) -> str:
    real, ref, large, ext = (doc.get(k, {}) for k in ("realistic_model", "reference_model", "large",
                                                       "extrapolation"))
    rows = ["| measurement | value | ratio (reference run) |", "|---|---|---|"]
    if ref:
        rows.append(f"| reference model ({ref['n_pix']} px, {ref['n_train']} stars): labels, 1 core | "
                    f"{ref['rate_predict_1thread']:.0f} spectra/s | |")
        rows.append(f"| same through `predict_batch` (chunks, Parquet) | {ref['rate_batch_1thread']:.0f} spectra/s | "
                    f"{ref['rate_batch_1thread'] / ref['rate_predict_1thread']:.2f} (labels only) |")
    if real:
        ms = real["ms_per_spectrum"]
        rows.append(f"| realistic model ({real['n_pix']} px, {real['n_train']} stars): labels, 1 core | "
                    f"{1e3 / ms['predict']:.0f} spectra/s ({ms['predict']:.1f} ms each) | |")
        rows.append(f"| mock generation + preprocessing, 1 core | {ms['generate']:.1f} + {ms['preprocess']:.1f} ms "
                    "per spectrum | |")
        r1 = real["rate_stream_inprocess_1thread"]
        rows.append(f"| whole stream, in process, 1 core | {r1:.0f} spectra/s | reference |")
        for k, v in real["rate_cluster"].items():
            rows.append(f"| whole stream, LocalCluster, {k} worker(s) | {v:.0f} spectra/s | {v / r1:.2f} |")
        rows.append(f"| speed-up 2 workers / 1 worker | {real['speedup_2_vs_1']:.2f} | |")
    if large:
        rows.append(f"| {large['n']:,} spectra, 2 workers, Parquet | {large['wall_s'] / 60:.1f} min "
                    f"({large['rate']:.0f} spectra/s) | target 15 min |")
        if large.get("rss_early_mb") and large.get("rss_late_mb"):
            rows.append(f"| memory of all processes, 5-25 % / 75-100 % done | {large['rss_early_mb']:.0f} / "
                        f"{large['rss_late_mb']:.0f} MB | {large['rss_late_mb'] / large['rss_early_mb']:.2f} |")
        rows.append(f"| 1-min load average during that run | {large['load']['mean']:.1f} (max "
                    f"{large['load']['max']:.1f}) on 2 cores | |")
    if large.get("cpu_ms_per_spectrum"):
        cpu = large["cpu_ms_per_spectrum"]
        rows.append(f"| CPU time per spectrum in that run (driver + workers) | {cpu:.1f} ms | "
                    f"{cpu / real['cpu_ms_per_spectrum_stream_inprocess']:.2f} (in process, 1 core) |"
                    if real.get("cpu_ms_per_spectrum_stream_inprocess") else
                    f"| CPU time per spectrum in that run (driver + workers) | {cpu:.1f} ms | |")
        rows.append(f"| 100,000 spectra with both cores free (from CPU time) | {1e5 * cpu / 2e3 / 60:.0f} min | "
                    "target 15 min |")
        if ext:
            rows.append(f"| {ext['n']:,} spectra, one 2-core machine, cores free (from CPU time) | "
                        f"{ext['n'] * cpu / 2e3 / 3600:.1f} h | |")
    if ext:
        rows.append(f"| {ext['n']:,} spectra, one 2-core machine (extrapolated from wall time) | "
                    f"{ext['hours_one_2core_machine']:.1f} h | |")
        cpu = large.get("cpu_ms_per_spectrum")
        for nw, h in ext["hours_on_N_workers"].items():
            free = f"; {ext['n'] * cpu / int(nw) / 1e3 / 60:.0f} min on free cores" if cpu else ""
            rows.append(f"| {ext['n']:,} spectra, {nw} workers (extrapolated) | {h * 60:.0f} min at the "
                        f"measured efficiency {ext['efficiency_2_workers']:.2f}{free} | |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- #
def _fast_options(a: argparse.Namespace) -> dict:
    """SLAM options of the fast labels given on the command line (LM tolerances, batch size)."""
    given = (("lm_xtol", a.lm_xtol), ("lm_ftol", a.lm_ftol), ("lm_sigma_tol", a.lm_sigma_tol),
             ("batch_size", a.batch_size), ("lm_damping", a.lm_damping), ("lm_rank", a.lm_rank),
             ("lm_newton", a.lm_newton))
    return {k: v for k, v in given if v}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-large", action="store_true", help="skip the large streamed run")
    ap.add_argument("--only-large", action="store_true", help="only the large run (keeps the other results)")
    ap.add_argument("--n-large", type=int, default=100_000)
    ap.add_argument("--train-only", action="store_true", help="train and cache the realistic model")
    ap.add_argument("--lm-float32", action="store_true", help="large run with SLAM(lm_float32=True)")
    ap.add_argument("--lm-precision", type=int, default=0, metavar="N",
                    help="only: label N mock spectra with float64 and float32 LM, compare")
    ap.add_argument("--lm-xtol", type=float, default=None, help="LM step tolerance of the fast labels")
    ap.add_argument("--lm-ftol", type=float, default=None, help="LM chi2 tolerance of the fast labels")
    ap.add_argument("--lm-sigma-tol", type=float, default=None,
                    help="LM stop at a Gauss-Newton step below this fraction of the formal errors (fast labels)")
    ap.add_argument("--batch-size", type=int, default=None, help="spectra per LM batch of the fast labels")
    ap.add_argument("--lm-damping", choices=("fixed", "nielsen"), default=None,
                    help="LM damping rule of the fast labels (SLAM(lm_damping=...))")
    ap.add_argument("--lm-rank", type=int, default=None,
                    help="LM first on the model projected onto this many principal spectra (SLAM(lm_rank=...))")
    ap.add_argument("--lm-newton", action="store_true",
                    help="LM steps with the Hessian of chi2 near the minimum (SLAM(lm_newton=True))")
    ap.add_argument("--book", action="store_true", help="figure + table for book/scaling.md from the JSON")
    a = ap.parse_args()
    if a.book:
        book_outputs(json.loads(JSON_PATH.read_text()))
        return
    if a.train_only:
        print(train_realistic_model())
        return
    RESULTS.mkdir(exist_ok=True)
    if JSON_PATH.exists():
        RESULTS_DOC.update(json.loads(JSON_PATH.read_text()))
    RESULTS_DOC["machine"] = machine()
    print(f"# {RESULTS_DOC['machine']}")
    print(f"# load average at start: {os.getloadavg()}", flush=True)
    if a.lm_precision:
        fast = {"lm_float32": True, **_fast_options(a)}
        bench_lm_precision(a.lm_precision, fast)
        return
    if not a.only_large:
        bench_reference_model()
        bench_realistic_model()
    if not a.skip_large:
        opts = {"lm_float32": True} if a.lm_float32 else {}
        opts.update(_fast_options(a))
        bench_large(a.n_large, model_options=opts or None)
    extrapolate()
    RESULTS_DOC["machine"]["load_at_end"] = os.getloadavg()
    JSON_PATH.write_text(json.dumps(RESULTS_DOC, indent=1, default=float))
    print(f"# wrote {JSON_PATH}")


if __name__ == "__main__":
    main()
