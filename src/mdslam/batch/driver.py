"""The driver of a batch run: :func:`predict_batch` and its result, :class:`BatchResult`.

Order of a run: every argument, the catalogue path, the model and the
engine (a Dask scheduler is reached) are checked first; then the work
directory is claimed and locked, the manifest is compared with an earlier
run's, the existing parts are verified, the missing chunks are labelled
(chunks lost to a crashed worker are run again), and the catalogue is
assembled only when every chunk has a verified part.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..flags import LabelFlag
from . import manifest as mf
from .engines import ENGINES, Outcome, _failed_table, _get_model, make_engine
from .output import check_output, write_catalogue
from .sources import _as_source, _Task

__all__ = ["BatchInterrupted", "BatchOptions", "BatchResult", "file_sha256", "predict_batch"]

MANIFEST_VERSION = 2
MAX_ROUNDS_WITHOUT_PROGRESS = 2
"""Rounds in a row that finish no chunk after which lost chunks are left for ``resume``."""


def file_sha256(path) -> str:
    """SHA-256 hex digest of a file's bytes (``pooch.file_hash``)."""
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a run; the finished chunks are kept for ``resume``.

    Attributes
    ----------
    work_dir : Path
    n_done, n_chunks : int
        Chunks with a part file, and chunks of the run.
    """

    def __init__(self, work_dir: Path, n_done: int, n_chunks: int):
        self.work_dir, self.n_done, self.n_chunks = work_dir, n_done, n_chunks
        super().__init__(f"interrupted: {n_done} of {n_chunks} chunks are finished in {work_dir}; run the "
                         "same command again with resume=True (--resume) to continue")


@dataclass
class BatchResult:
    """What :func:`predict_batch` did.

    Attributes
    ----------
    out : Path
        The catalogue written (None if ``assemble=False`` or chunks are missing).
    n_spectra, n_chunks : int
        Spectra and chunks in the whole batch.
    n_chunks_skipped : int
        Chunks finished by an earlier run and not redone (``resume=True``).
    n_chunks_labelled : int
        Chunks labelled by this run (including failed ones).
    failed_chunks : dict
        Chunk index -> error, for chunks whose labelling raised (their rows
        are in the catalogue, flagged ``LabelFlag.FAILED``).
    n_failed_spectra, n_unflagged : int
        Rows of the catalogue flagged ``LabelFlag.FAILED``; rows with no flag at all.
    errors : list of str
        The first (up to 20) messages of the ``error`` column.
    seconds : float
        Wall time of this run.
    engine : str
    work_dir : Path
    lost_chunks : dict
        Chunk index -> error, for chunks the infrastructure lost (a worker
        killed, the cluster gone) even after reruns: no catalogue is written
        and the run continues with ``resume=True``.
    """

    out: Path | None
    n_spectra: int
    n_chunks: int
    n_chunks_skipped: int
    n_chunks_labelled: int
    failed_chunks: dict[int, str]
    n_failed_spectra: int
    n_unflagged: int
    errors: list[str]
    seconds: float
    engine: str
    work_dir: Path
    lost_chunks: dict[int, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: spectra, chunks (resumed, now, failed, lost), failed rows, time and engine."""
        lost = f", {len(self.lost_chunks)} lost" if self.lost_chunks else ""
        return (f"{self.n_spectra} spectra in {self.n_chunks} chunks ({self.n_chunks_skipped} done before, "
                f"{self.n_chunks_labelled} now, {len(self.failed_chunks)} failed{lost}), "
                f"{self.n_failed_spectra} flagged failed; {self.seconds:.1f} s on {self.engine}")


# --------------------------------------------------------------------------- #
# checks before anything runs
# --------------------------------------------------------------------------- #
def _check_arguments(engine: str, chunk_size: int, n_workers: int | None) -> int:
    """Validate the engine options; return the number of workers (default: ``joblib.cpu_count()``)."""
    import joblib

    if engine not in ENGINES:
        raise mf.BatchError(f"engine must be one of {ENGINES}, not {engine!r}")
    if int(chunk_size) < 1:
        raise mf.BatchError(f"chunk_size must be >= 1, not {chunk_size}")
    if n_workers is not None and int(n_workers) < 1:
        raise mf.BatchError(f"n_workers must be a number of processes >= 1 (None: all {joblib.cpu_count()} "
                            f"CPUs), not {n_workers}")
    return int(n_workers or joblib.cpu_count())


def _prediction_options(model_options: dict | None, low_snr: float | None, threads: int | None,
                        engine: str) -> dict:
    options = dict(model_options or {})
    if low_snr is not None:
        options["low_snr"] = float(low_snr)
    options["n_jobs"] = threads if threads is not None else (-1 if engine == "inprocess" else 1)
    options["verbose"] = False
    return options


def _checked_model(model, options: dict):
    """The fitted model (loaded once here, in this process), or a one-line error naming the file."""
    from ..slam import SLAM

    if isinstance(model, SLAM):
        if not hasattr(model, "wavelength_"):
            raise mf.BatchError("model is not fitted: call fit() first")
        return model
    path = Path(model)
    if not path.is_file():
        raise mf.BatchError(f"model {path}: no such file")
    try:
        m = _get_model(path, options)
        _ = m.label_names_, m.wavelength_
    except Exception as exc:  # noqa: BLE001 - any load failure is the same user error
        raise mf.BatchError(f"model {path}: not a SLAM model file written by SLAM.save / mdslam train "
                            f"({type(exc).__name__}: {exc})") from None
    return m


# --------------------------------------------------------------------------- #
# the run
# --------------------------------------------------------------------------- #
@dataclass
class _Run:
    work: Path
    engine: object
    model_ref: object
    options: dict
    tasks: dict[int, _Task]
    cids: dict[int, str]
    failed: dict[int, str] = field(default_factory=dict)
    lost: dict[int, str] = field(default_factory=dict)
    n_labelled: int = 0

    def plan(self) -> list[tuple[int, int, str]]:
        return [(i, t.n, self.cids[i]) for i, t in self.tasks.items()]


def _open_manifest(work: Path, out: Path, key_doc: dict, resume: bool, overwrite: bool, n_spectra: int,
                   n_chunks: int) -> str:
    """Compare with an earlier run's manifest, clear its parts if asked, write this run's; return the key."""
    key = hashlib.sha256(json.dumps(key_doc, sort_keys=True, default=repr).encode()).hexdigest()
    path = work / mf.MANIFEST
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
        if resume and old.get("key") != key:
            raise mf.BatchError(f"{work} holds a run with another model, input, chunk size or options (its "
                                "manifest key differs): use overwrite=True (--overwrite) to start again")
        if not resume and not overwrite:
            raise FileExistsError(f"{work} holds parts of an earlier run: pass resume=True (--resume) to "
                                  "continue it or overwrite=True (--overwrite) to start again")
    if not resume:
        for p in mf.part_files(work):
            p.unlink()
    for p in work.glob(".tmp*-chunk_*"):
        p.unlink()
    mf.write_json({"key": key, "key_doc": key_doc, "n_spectra": n_spectra, "n_chunks": n_chunks,
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "out": str(out), "complete": False}, path)
    return key


def _todo(run: _Run, retry_failed: bool) -> list[_Task]:
    """Chunks without a verified part; damaged parts (and failed ones, if retried) are removed."""
    good, bad = mf.check_parts(run.work, run.plan())
    for i, why in bad.items():
        if why != "no part file":
            warnings.warn(f"chunk {i} is redone: {why}", stacklevel=3)
    for i in bad:
        for failed in (False, True):
            mf.part_path(run.work, i, failed).unlink(missing_ok=True)
    if retry_failed:
        for i in [i for i, p in good.items() if p.name.endswith(".failed.fits")]:
            good.pop(i).unlink()
    return [t for i, t in run.tasks.items() if i not in good]


def _record(run: _Run, oc: Outcome) -> None:
    """Write the part of a finished (or failed) chunk."""
    task = run.tasks[oc.index]
    if oc.table is not None and len(oc.table) != task.n:
        oc = Outcome(oc.index, None, f"chunk {oc.index} failed: {len(oc.table)} rows for {task.n} spectra")
    if oc.table is not None:
        mf.write_part(oc.table, mf.part_path(run.work, oc.index), oc.index, run.cids[oc.index])
        return
    tab = _failed_table(run.model_ref, task, run.options, oc.error)
    mf.write_part(tab, mf.part_path(run.work, oc.index, failed=True), oc.index, run.cids[oc.index])
    run.failed[oc.index] = oc.error


def _label(run: _Run, todo: list[_Task], bar=None) -> None:
    """Label ``todo``; lost chunks are run again while reruns finish chunks (see the module docstring)."""
    idle = 0
    while todo:
        run.lost = {}
        done_before = run.n_labelled
        for oc in run.engine.run(run.model_ref, todo, run.options):
            if oc.lost:
                run.lost[oc.index] = oc.error
                continue
            _record(run, oc)
            run.n_labelled += 1
            if bar is not None:
                bar.update(run.tasks[oc.index].n)
        todo = [run.tasks[i] for i in sorted(run.lost)]
        idle = 0 if run.n_labelled > done_before else idle + 1
        if not todo or idle >= MAX_ROUNDS_WITHOUT_PROGRESS:
            break
        warnings.warn(f"{len(todo)} chunk(s) lost by the {run.engine.name} engine are run again "
                      f"(first: {next(iter(run.lost.values()))})", stacklevel=3)


def _assemble(run: _Run, out: Path, n_spectra: int, meta: dict) -> tuple[bool, tuple[int, int, list[str]]]:
    """Verify every part (redoing a damaged one once), then write the catalogue; False if chunks are missing."""
    for attempt in range(2):
        good, bad = mf.check_parts(run.work, run.plan())
        if not bad or attempt == 1:
            break
        _label(run, _todo(run, retry_failed=False))
    if bad:
        run.lost.update({i: f"no usable part: {why}" for i, why in bad.items() if i not in run.lost})
        return False, (0, 0, [])
    parts = [good[i] for i in sorted(good)]
    n_rows = write_catalogue(parts, out, meta)
    if n_rows != n_spectra:                 # cannot happen with verified parts; never trust silently
        raise mf.BatchError(f"{out}: {n_rows} rows assembled for {n_spectra} spectra")
    return True, mf.count_flags(parts, int(LabelFlag.FAILED))


@dataclass(frozen=True)
class BatchOptions:
    """How :func:`predict_batch` runs; give it as ``options=`` or its fields as keywords.

    Parameters
    ----------
    fmt : {"auto", "arrays", "lamost", "boss"}
        Format of file inputs.
    chunk_size : int
        Spectra per chunk: the unit of work, of memory and of resuming.
    engine : {"inprocess", "joblib", "dask"}
    n_workers : int, optional
        Worker processes of joblib / the LocalCluster, >= 1 (default: the
        CPUs available). Ignored by ``inprocess`` and by an existing scheduler.
    scheduler : str or dask.distributed.Client, optional
        ``"tcp://host:port"`` of a running Dask scheduler, or a Client
        (engine ``"dask"``; None starts a LocalCluster).
    threads : int, optional
        Threads of the model inside one worker (``SLAM.n_jobs``). Default:
        all CPUs in process, 1 in each joblib / Dask worker.
    resume : bool
        Continue an interrupted run from its verified part files (same model,
        inputs, chunk size and options; finished chunks are skipped, failed
        ones tried again if ``retry_failed``, damaged ones redone).
    overwrite : bool
        Replace an existing catalogue and discard an earlier run's parts.
    work_dir : path, optional
        Directory in which the run makes its own ``<out name>.parts``
        subdirectory (default: beside ``out``). Only that subdirectory, and
        only the files the run wrote there, are ever deleted.
    keep_parts : bool
        Keep the part files after the catalogue is written.
    retry_failed : bool
        On resume, label again the chunks whose labelling raised.
    assemble : bool
        Write the catalogue at the end (False: only the parts).
    progress : bool
        tqdm progress bar over spectra.
    low_snr : float, optional
        ``SLAM.low_snr`` for the flags (default: the model's).
    model_options : dict, optional
        Other :meth:`SLAM.set_params` options for prediction (e.g.
        ``{"batch_size": 128}``).
    """

    fmt: str = "auto"
    chunk_size: int = 1000
    engine: str = "inprocess"
    n_workers: int | None = None
    scheduler: Any = None
    threads: int | None = None
    resume: bool = False
    overwrite: bool = False
    work_dir: Any = None
    keep_parts: bool = False
    retry_failed: bool = True
    assemble: bool = True
    progress: bool = True
    low_snr: float | None = None
    model_options: dict | None = None


def predict_batch(model, source, out, *, options: BatchOptions | None = None, **keywords: Any) -> BatchResult:
    """Label a stream of spectra chunk by chunk into one catalogue, resumably (package docstring).

    Parameters
    ----------
    model : path or SLAM
        Model file written by :meth:`SLAM.save` (workers load it by path), or
        a fitted model (saved into the work directory for the process engines).
    source : FileSource, MockSource, ArraySource, or path(s)
        Paths and directories are read as ``FileSource(source, fmt)``.
    out : path
        Catalogue to write: ``.fits``/``.fit`` (FITS binary table, streamed),
        ``.parquet``/``.pq`` (Parquet, one row group per chunk), or any other
        format astropy writes (assembled in memory).
    options : BatchOptions, optional
        How the run goes (chunk size, engine, resume, ...).
    **keywords
        The fields of :class:`BatchOptions` instead (``chunk_size=500, engine="dask"``).

    Returns
    -------
    BatchResult

    Raises
    ------
    FileExistsError
        ``out`` exists (without ``overwrite``), or the work directory holds
        parts of an earlier run and neither ``resume`` nor ``overwrite`` is given.
    BatchError (a ValueError)
        Any argument, the model, the output path or the scheduler is unusable
        (checked before any chunk runs); ``resume`` with another model, input
        or chunk size; the work directory is locked by another run.
    BatchInterrupted (a KeyboardInterrupt)
        Ctrl-C: the finished chunks are kept for ``resume``.
    TypeError
        A keyword that is no field of :class:`BatchOptions`, or both ``options`` and keywords.
    """
    t_start = time.perf_counter()
    if options is not None and keywords:
        raise TypeError(f"predict_batch: give options=BatchOptions(...) or keywords, not both ({sorted(keywords)})")
    o = options if options is not None else BatchOptions(**keywords)
    out = Path(out)
    n_workers = _check_arguments(o.engine, o.chunk_size, o.n_workers)
    if o.assemble:
        check_output(out, o.overwrite)
    src = _as_source(source, o.fmt)
    prediction = _prediction_options(o.model_options, o.low_snr, o.threads, o.engine)
    model_obj = _checked_model(model, prediction)
    work = mf.work_dir_for(out, o.work_dir)
    eng = make_engine(o.engine, n_workers, o.scheduler)
    try:
        mf.claim_work_dir(work)
        with mf.work_lock(work):
            return _run_locked(work, eng, model, model_obj, src, out, prediction, o, t_start)
    finally:
        eng.close()


def _run_locked(work: Path, eng: Any, model: Any, model_obj: Any, src: Any, out: Path, prediction: dict,
                o: BatchOptions, t_start: float) -> BatchResult:
    """The run in its claimed, locked work directory: manifest, labelling, catalogue."""
    model_path = Path(model) if model_obj is not model else work / mf.SAVED_MODEL
    if model_obj is model:
        model.save(model_path)
    model_sha = file_sha256(model_path)
    tasks = {t.index: t for t in src.tasks(o.chunk_size)}
    key_doc = {"version": MANIFEST_VERSION, "model_sha256": model_sha, "source": src.fingerprint(),
               "chunk_size": int(o.chunk_size),
               "options": {k: v for k, v in sorted(prediction.items()) if k not in ("n_jobs", "verbose")}}
    key = _open_manifest(work, out, key_doc, o.resume, o.overwrite, len(src), len(tasks))
    run = _Run(work, eng, model if (o.engine == "inprocess" and model_obj is model) else str(model_path),
               prediction, tasks, {i: mf.chunk_id(key, t.identity()) for i, t in tasks.items()})
    todo = _todo(run, o.retry_failed)
    _label_with_progress(run, todo, o)
    n_skipped = len(tasks) - len(todo)
    written, counts = False, (0, 0, [])
    if o.assemble and tasks and not run.lost:
        meta = {"MODEL": "(in-memory SLAM model)" if model_obj is model else str(model_path),
                "MODELSHA": model_sha, "MDSLAMV": __version__, "NCHUNKS": len(tasks),
                "LABELS": ",".join(model_obj.label_names_)}
        written, counts = _assemble(run, out, len(src), meta)
    if written:
        mf.write_json({**json.loads((work / mf.MANIFEST).read_text()), "complete": True},
                      work / mf.MANIFEST)
        if not o.keep_parts:
            mf.remove_work_dir(work)
    return BatchResult(out if written else None, len(src), len(tasks), n_skipped, run.n_labelled, run.failed,
                       counts[0], counts[1], counts[2], time.perf_counter() - t_start, o.engine, work, run.lost)


def _label_with_progress(run: _Run, todo: list, o: BatchOptions) -> None:
    """:func:`_label` the chunks ``todo`` under a progress bar; Ctrl-C becomes :class:`BatchInterrupted`."""
    from tqdm.auto import tqdm

    try:
        with tqdm(total=sum(t.n for t in todo), unit="spec", desc=f"labelling ({o.engine})",
                  disable=not o.progress, smoothing=0.1) as bar:
            _label(run, todo, bar)
    except KeyboardInterrupt as exc:
        n_done = sum(mf.part_path(run.work, i).exists() for i in run.tasks)
        raise BatchInterrupted(run.work, n_done, len(run.tasks)) from exc
