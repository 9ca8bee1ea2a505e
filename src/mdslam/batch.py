"""Label many spectra: streaming, resumable batch prediction on one machine or a Dask cluster.

:func:`predict_batch` cuts a *source* of spectra into chunks, labels each
chunk with :meth:`mdslam.slam.SLAM.predict_table` and writes it to a part
file as soon as it is done; at the end the parts are streamed, one at a
time, into one catalogue (FITS binary table or Parquet). Neither the spectra
nor the catalogue are ever held in memory whole: memory stays flat whatever
the number of spectra.

Sources
-------
* :class:`FileSource` - files and directories: ``.npz`` / FITS tables of
  normalised flux arrays on the model grid (read by
  :func:`mdslam.slam_io.read_spectra_arrays`; a file holding many spectra is
  split across chunks), or LAMOST / BOSS spectrum files (one spectrum each,
  read by :mod:`mdslam.spectra` and put onto the model grid by
  :func:`mdslam.preprocess.preprocess`).
* :class:`MockSource` - a :class:`mdslam.mock.MockSurvey` streamed chunk by
  chunk (generated, preprocessed onto the model grid, labelled, never
  written to disk); the truth columns are kept beside the labels.
* :class:`ArraySource` - arrays already in memory.

Engines
-------
``"inprocess"`` (default) labels the chunks one after the other in this
process (the model uses ``threads`` threads); ``"joblib"`` runs ``n_workers``
loky processes; ``"dask"`` submits to a ``dask.distributed`` cluster: the
scheduler at ``scheduler="tcp://host:port"`` (or a ``Client``), else a
``LocalCluster`` of ``n_workers`` single-threaded processes
(:func:`local_cluster`, which also keeps Dask's ``MALLOC_TRIM_THRESHOLD_``
out of the workers: it doubles the CPU time of this numpy-heavy work). Workers receive
the *path* of the model file (it must be readable there: a shared file
system for a remote cluster) and load it once per process.

Resuming
--------
The parts go to ``work_dir`` (default ``<out>.parts/``) with a
``manifest.json`` whose key is the SHA-256 of the model file, the input
list (paths, sizes, modification times; or the mock's parameters), the
chunk size and the prediction options. A part file appears (atomically,
by rename) only when its chunk is finished, so after an interruption
``resume=True`` labels only the chunks without a part file; finished chunks
are never redone. The parts are deleted once the catalogue is written
(``keep_parts=True`` keeps them).

Failures
--------
A spectrum that cannot be read or fitted gets a row with ``flag`` bit
``LabelFlag.FAILED`` and, when known, the reason in the ``error`` column. A chunk
that fails as a whole (a worker killed, an unexpected exception) gets one
row per spectrum flagged the same way, with the error; its part is named
``*.failed.fits`` and ``resume=True`` tries it again. Nothing stops the
batch.

Example
-------
>>> from mdslam.batch import FileSource, predict_batch              # doctest: +SKIP
>>> res = predict_batch("model.npz", FileSource(["spectra/"]), "labels.parquet",
...                     chunk_size=2000, engine="dask", n_workers=2)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import time
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack

from .flags import LabelFlag

__all__ = [
    "ENGINES",
    "ArraySource",
    "BatchResult",
    "ChunkData",
    "FileSource",
    "MockSource",
    "expand_inputs",
    "file_sha256",
    "local_cluster",
    "predict_batch",
]

ENGINES = ("inprocess", "joblib", "dask")
"""Names of the execution engines of :func:`predict_batch`."""

MANIFEST_VERSION = 1
_PATTERNS = {
    "auto": ("*.npz", "*.fits", "*.fit", "*.fits.gz"),
    "arrays": ("*.npz", "*.fits", "*.fit", "*.fits.gz"),
    "lamost": ("*.fits", "*.fits.gz", "*.fit"),
    "boss": ("spec-*.fits", "spec-*.fits.gz"),
}
_FITS_EXT = (".fits", ".fit", ".fts")
_PARQUET_EXT = (".parquet", ".pq")


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(block):
            h.update(b)
    return h.hexdigest()


def expand_inputs(paths: str | os.PathLike | Iterable[str | os.PathLike], fmt: str = "auto",
                  recursive: bool = False) -> list[Path]:
    """Files named by ``paths``: files as given, directories expanded to their spectra files.

    Parameters
    ----------
    paths : path or sequence of paths
        Files and/or directories.
    fmt : {"auto", "arrays", "lamost", "boss"}
        Decides the file patterns of a directory: npz / FITS for arrays,
        ``*.fits[.gz]``/``*.fit`` for LAMOST, ``spec-*.fits[.gz]`` for BOSS.
    recursive : bool
        Also search sub-directories.

    Returns
    -------
    list of Path
        Directory contents sorted by name; files in the order given. A path
        that does not exist is kept (it becomes a flagged row, not an error).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if fmt not in _PATTERNS:
        raise ValueError(f"unknown spectra format {fmt!r} (one of {sorted(_PATTERNS)})")
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found: set[Path] = set()
            for pat in _PATTERNS[fmt]:
                found.update(p.rglob(pat) if recursive else p.glob(pat))
            out.extend(sorted(f for f in found if f.is_file()))
        else:
            out.append(p)
    return out


def _npz_rows(path: Path) -> int:
    """Number of spectra in an npz of arrays, from the header of its flux array (no data read)."""
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.lower() == "flux.npy")
        with z.open(name) as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape = read(f)[0]
    return int(shape[0]) if len(shape) == 2 else 1


def _fits_rows(path: Path) -> int:
    with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
        for h in hdul:
            if isinstance(h, fits.BinTableHDU) and any(c.lower() == "flux" for c in h.columns.names):
                return int(h.header["NAXIS2"])
    raise ValueError("no FITS table with a FLUX column")


def _read_ids(path: Path) -> list[str] | None:
    """The id column of an arrays file without reading its flux (None if there is none)."""
    from .slam_io import _pick

    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                k = _pick(z.files, "id", "ids")
                return None if k is None else np.asarray(z[k]).astype(str).ravel().tolist()
        with fits.open(path, memmap=True) as hdul:
            for h in hdul:
                if isinstance(h, fits.BinTableHDU) and _pick(h.columns.names, "flux") is not None:
                    k = _pick(h.columns.names, "id", "obsid", "source_id", "gaiaedr3_source_id", "apogee_id")
                    return None if k is None else np.asarray(h.data[k]).astype(str).tolist()
    except Exception:  # noqa: BLE001 - fall back to file:row ids
        return None
    return None


def _count_rows(path: Path) -> int:
    """Spectra in an arrays file; 1 when it cannot be opened (it becomes one flagged row)."""
    try:
        return _npz_rows(path) if path.suffix == ".npz" else _fits_rows(path)
    except Exception:  # noqa: BLE001 - an unreadable file is reported when its chunk is read
        return 1


@dataclass
class ChunkData:
    """One chunk of spectra, ready for :meth:`SLAM.predict_table`.

    Attributes
    ----------
    flux : (n, n_pix) array or list of 1-D arrays (ragged: wrong lengths are flagged).
    ivar : same, or None.
    ids, files, errors : (n,) str arrays; ``errors`` is "" for a spectrum read fine.
    snr : (n,) float array or None (then the model computes it from flux and ivar).
    extra : Table or None
        Columns appended to the catalogue (e.g. the mock truth).
    """

    flux: Any
    ivar: Any
    ids: np.ndarray
    files: np.ndarray
    errors: np.ndarray
    snr: np.ndarray | None = None
    extra: Table | None = None


# --------------------------------------------------------------------------- #
# tasks: small, picklable descriptions of one chunk (what a worker receives)
# --------------------------------------------------------------------------- #
@dataclass
class _Task:
    index: int
    n: int

    def load(self, grid: np.ndarray) -> ChunkData:  # pragma: no cover - abstract
        raise NotImplementedError

    def placeholder(self) -> ChunkData:
        """Ids, files (and extra columns) of the chunk's spectra without reading them."""
        raise NotImplementedError  # pragma: no cover


_ARRAYS_CACHE: dict[str, tuple[tuple, Any]] = {}


def _read_arrays_cached(path: Path):
    """:func:`read_spectra_arrays` of one file, remembering the last file read (chunks of a big file)."""
    from .slam_io import read_spectra_arrays

    st = path.stat()
    key = (st.st_size, st.st_mtime_ns)
    hit = _ARRAYS_CACHE.get(str(path))
    if hit is not None and hit[0] == key:
        return hit[1]
    a = read_spectra_arrays(path)
    _ARRAYS_CACHE.clear()
    _ARRAYS_CACHE[str(path)] = (key, a)
    return a


@dataclass
class _FileTask(_Task):
    fmt: str = "auto"
    pieces: list[tuple[str, int, int]] = field(default_factory=list)  # (path, row0, row1)
    whole_files: bool = False  # True: one spectrum per file (LAMOST/BOSS)

    def load(self, grid: np.ndarray) -> ChunkData:
        if self.fmt in ("lamost", "boss"):
            return self._load_spectrum_files(grid)
        flux: list[np.ndarray] = []
        ivar: list[np.ndarray | None] = []
        ids: list[str] = []
        files: list[str] = []
        errors: list[str] = []
        for path, r0, r1 in self.pieces:
            p = Path(path)
            try:
                a = _read_arrays_cached(p)
                if r1 > a.flux.shape[0]:
                    raise ValueError(f"{p}: has {a.flux.shape[0]} spectra, expected at least {r1} "
                                     "(file changed since the batch was planned?)")
            except Exception as exc:  # noqa: BLE001 - a bad file is a flagged row, not a stop
                k = max(r1 - r0, 1)
                flux.extend([np.zeros(0)] * k)
                ivar.extend([None] * k)
                ids.extend([f"{p.name}:{i}" for i in range(r0, r0 + k)] if k > 1 else [p.name])
                files.extend([p.name] * k)
                msg = str(exc) if str(p) in str(exc) else f"{p}: {exc}"
                errors.extend([msg] * k)
                continue
            for i in range(r0, r1):
                flux.append(a.flux[i])
                ivar.append(None if a.ivar is None else a.ivar[i])
            ids.extend(a.ids[r0:r1].tolist())
            files.extend(a.files[r0:r1].tolist())
            errors.extend([""] * (r1 - r0))
        if all(v is None for v in ivar):
            iv = None
        else:
            iv = [np.full_like(f, np.inf) if v is None else v for f, v in zip(flux, ivar, strict=True)]
        return ChunkData(flux, iv, np.asarray(ids, str), np.asarray(files, str), np.asarray(errors, str))

    def _load_spectrum_files(self, grid: np.ndarray) -> ChunkData:
        from . import preprocess, spectra

        reader = spectra.read_lamost if self.fmt == "lamost" else spectra.read_boss
        paths = [p for p, _, _ in self.pieces]
        sp = reader(paths, on_error="flag")
        sp = preprocess.preprocess(sp, grid=np.asarray(grid, float), progress=False)
        meta = sp.meta
        errors = np.array([f"{f}: {r}" if fl else "" for f, r, fl in
                           zip(meta["file"], meta["flag_reason"], meta["flag"], strict=True)], str)
        return ChunkData(sp.flux, sp.ivar, np.asarray(meta["id"]).astype(str),
                         np.asarray(meta["file"]).astype(str), errors,
                         snr=np.asarray(meta["snr"], float))

    def placeholder(self) -> ChunkData:
        ids, files = [], []
        for path, r0, r1 in self.pieces:
            name = Path(path).name
            if self.whole_files:
                ids.append(Path(path).stem)
                files.append(name)
            else:
                file_ids = _read_ids(Path(path))
                if file_ids is not None and len(file_ids) >= r1:
                    ids.extend(file_ids[r0:r1])
                else:
                    ids.extend(f"{name}:{i}" for i in range(r0, r1))
                files.extend([name] * (r1 - r0))
        n = len(ids)
        return ChunkData([np.zeros(0)] * n, None, np.asarray(ids, str), np.asarray(files, str),
                         np.full(n, "", dtype="U1"))


_MOCK_CACHE: dict[str, Any] = {}
_TRUTH_COLUMNS = ("teff_true", "logg_true", "feh_true", "snr_true", "rv_true", "active")


def _mock_survey(kwargs: dict):
    from .mock import MockSurvey

    key = repr(sorted(kwargs.items()))
    if key not in _MOCK_CACHE:
        _MOCK_CACHE.clear()
        _MOCK_CACHE[key] = MockSurvey(**kwargs)
    return _MOCK_CACHE[key]


@dataclass
class _MockTask(_Task):
    start: int = 0
    kwargs: dict = field(default_factory=dict)
    preprocess_kwargs: dict = field(default_factory=dict)

    def load(self, grid: np.ndarray) -> ChunkData:
        from .preprocess import preprocess

        ms = _mock_survey(self.kwargs)
        spec, truth = ms.generate(self.n, start=self.start)
        kw = dict(self.preprocess_kwargs)
        kw.setdefault("rv", np.asarray(truth["rv_true"], float))
        sp = preprocess(spec, grid=np.asarray(grid, float), progress=False, **kw)
        meta = sp.meta
        errors = np.array([r if fl else "" for r, fl in zip(meta["flag_reason"], meta["flag"], strict=True)],
                          str)
        return ChunkData(sp.flux, sp.ivar, np.asarray(meta["id"]).astype(str),
                         np.full(self.n, "mock", dtype="U4"), errors,
                         snr=np.asarray(meta["snr"], float), extra=truth[list(_TRUTH_COLUMNS)])

    def placeholder(self) -> ChunkData:
        truth = _mock_survey(self.kwargs).draw_truth(self.n, start=self.start)
        return ChunkData([np.zeros(0)] * self.n, None, np.asarray(truth["id"]).astype(str),
                         np.full(self.n, "mock", dtype="U4"), np.full(self.n, "", dtype="U1"),
                         extra=truth[list(_TRUTH_COLUMNS)])


@dataclass
class _ArrayTask(_Task):
    flux: Any = None
    ivar: Any = None
    ids: np.ndarray | None = None
    snr: np.ndarray | None = None

    def load(self, grid: np.ndarray) -> ChunkData:
        return ChunkData(self.flux, self.ivar, self.ids, np.full(self.n, "", dtype="U1"),
                         np.full(self.n, "", dtype="U1"), snr=self.snr)

    def placeholder(self) -> ChunkData:
        return ChunkData([np.zeros(0)] * self.n, None, self.ids, np.full(self.n, "", dtype="U1"),
                         np.full(self.n, "", dtype="U1"))


# --------------------------------------------------------------------------- #
# sources
# --------------------------------------------------------------------------- #
class FileSource:
    """Spectra in files and directories (see the module docstring).

    Parameters
    ----------
    paths : path or sequence of paths
        Files and directories (expanded by :func:`expand_inputs`).
    fmt : {"auto", "arrays", "lamost", "boss"}
        ``auto``/``arrays``: npz / FITS tables of normalised flux on the model
        grid (:mod:`mdslam.slam_io`); ``lamost``/``boss``: spectrum files,
        preprocessed onto the model grid.
    recursive : bool
        Search directories recursively.
    """

    def __init__(self, paths, fmt: str = "auto", recursive: bool = False):
        self.fmt = fmt
        self.paths = expand_inputs(paths, fmt, recursive)
        self.whole_files = fmt in ("lamost", "boss")
        self._rows = [1] * len(self.paths) if self.whole_files else None

    @property
    def rows(self) -> list[int]:
        """Spectra per file (arrays files: read from the file headers, once)."""
        if self._rows is None:
            self._rows = [_count_rows(p) for p in self.paths]
        return self._rows

    def __len__(self) -> int:
        return int(sum(self.rows))

    def fingerprint(self) -> dict:
        h = hashlib.sha256()
        for p in self.paths:
            try:
                st = p.stat()
                h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{p}|missing\n".encode())
        return {"kind": "files", "fmt": self.fmt, "n_files": len(self.paths), "files_sha256": h.hexdigest()}

    def tasks(self, chunk_size: int) -> Iterator[_Task]:
        index, pieces, n = 0, [], 0
        for p, rows in zip(self.paths, self.rows, strict=True):
            r0 = 0
            while r0 < rows:
                take = min(rows - r0, chunk_size - n)
                pieces.append((str(p), r0, r0 + take))
                n += take
                r0 += take
                if n == chunk_size:
                    yield _FileTask(index, n, self.fmt, pieces, self.whole_files)
                    index, pieces, n = index + 1, [], 0
        if n:
            yield _FileTask(index, n, self.fmt, pieces, self.whole_files)


class MockSource:
    """Spectra ``start .. start + n - 1`` of a mock survey, generated chunk by chunk.

    Each chunk is generated (:meth:`mdslam.mock.MockSurvey.generate`, same
    spectra for any chunking), preprocessed onto the model grid
    (:func:`mdslam.preprocess.preprocess`, shifted by the true radial
    velocity, as if the survey pipeline had measured it) and labelled; the
    catalogue gets the truth columns ``teff_true``, ``logg_true``,
    ``feh_true``, ``snr_true``, ``rv_true``, ``active``. Workers rebuild the
    survey from its parameters (the template basis is not shipped).

    Parameters
    ----------
    survey : MockSurvey or dict
        The mock survey, or the keyword arguments of :class:`MockSurvey`.
    n : int
        Number of spectra.
    start : int
        Index of the first spectrum.
    preprocess_kwargs : dict, optional
        Passed to :func:`mdslam.preprocess.preprocess` (e.g. ``mask_halpha``).
    """

    def __init__(self, survey, n: int, start: int = 0, preprocess_kwargs: dict | None = None):
        if isinstance(survey, dict):
            self.kwargs = dict(survey)
        else:
            from .mock import MockSurvey

            if not isinstance(survey, MockSurvey):
                raise TypeError("survey must be a MockSurvey or a dict of its parameters")
            self.kwargs = survey.params()
            _MOCK_CACHE.clear()
            _MOCK_CACHE[repr(sorted(self.kwargs.items()))] = survey   # reuse it in this process
        if int(n) < 0 or int(start) < 0:
            raise ValueError("n and start must be >= 0")
        self.n, self.start = int(n), int(start)
        self.preprocess_kwargs = dict(preprocess_kwargs or {})

    def __len__(self) -> int:
        return self.n

    def fingerprint(self) -> dict:
        return {"kind": "mock", "n": self.n, "start": self.start,
                "survey": {k: (v if isinstance(v, (int, float, str, tuple, list, type(None))) else repr(v))
                           for k, v in sorted(self.kwargs.items())},
                "preprocess": repr(sorted(self.preprocess_kwargs.items()))}

    def tasks(self, chunk_size: int) -> Iterator[_Task]:
        for k, i0 in enumerate(range(self.start, self.start + self.n, chunk_size)):
            m = min(chunk_size, self.start + self.n - i0)
            yield _MockTask(k, m, i0, self.kwargs, self.preprocess_kwargs)


class ArraySource:
    """Normalised spectra already in memory, on the model grid.

    Parameters
    ----------
    flux : (n, n_pix) array
    ivar : (n, n_pix) array, optional
    ids : (n,) sequence, optional (default ``"0"``, ``"1"``, ...)
    snr : (n,) array, optional
    """

    def __init__(self, flux, ivar=None, ids=None, snr=None):
        self.flux = np.atleast_2d(np.asarray(flux, float))
        self.ivar = None if ivar is None else np.atleast_2d(np.asarray(ivar, float))
        n = self.flux.shape[0]
        self.ids = (np.arange(n).astype(str) if ids is None else np.asarray(ids).astype(str))
        self.snr = None if snr is None else np.asarray(snr, float)

    def __len__(self) -> int:
        return self.flux.shape[0]

    def fingerprint(self) -> dict:
        h = hashlib.sha256(np.ascontiguousarray(self.flux).tobytes())
        for a in (self.ivar, self.snr):
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
        h.update("\n".join(self.ids).encode())
        return {"kind": "arrays", "n": len(self), "sha256": h.hexdigest()}

    def tasks(self, chunk_size: int) -> Iterator[_Task]:
        for k, i0 in enumerate(range(0, len(self), chunk_size)):
            sl = slice(i0, min(i0 + chunk_size, len(self)))
            yield _ArrayTask(k, sl.stop - sl.start, self.flux[sl],
                             None if self.ivar is None else self.ivar[sl], self.ids[sl],
                             None if self.snr is None else self.snr[sl])


def _as_source(source, fmt: str):
    if hasattr(source, "tasks") and hasattr(source, "fingerprint"):
        return source
    from .mock import MockSurvey

    if isinstance(source, MockSurvey):
        raise TypeError("wrap a MockSurvey as MockSource(survey, n=...) to say how many spectra")
    return FileSource(source, fmt=fmt)


# --------------------------------------------------------------------------- #
# the worker side
# --------------------------------------------------------------------------- #
_MODEL_CACHE: dict[tuple, Any] = {}


def _get_model(model, options: dict):
    """The model with ``options`` set: loaded from its path once per process (or copied)."""
    from .slam import SLAM

    if isinstance(model, SLAM):
        m = copy.copy(model)
        m.set_params(**options)
        return m
    path = Path(model)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, tuple(sorted(options.items())))
    if key not in _MODEL_CACHE:
        m = SLAM.load(path)
        m.set_params(**options)
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = m
    return _MODEL_CACHE[key]


def _finish_table(tab: Table, data: ChunkData) -> Table:

    tab.add_column(np.asarray(data.files, str), name="file", index=1)
    err = np.asarray(data.errors, str)
    tab["error"] = err
    tab["error"].description = "why a spectrum could not be read or labelled ('' if it was)"
    bad = np.char.str_len(err) > 0
    tab["flag"][bad] |= LabelFlag.FAILED
    if data.extra is not None:
        for name in data.extra.colnames:
            tab[name] = data.extra[name]
    return tab


def _label_task(model, task: _Task, options: dict) -> tuple[int, Table | None, str]:
    """Label one chunk: ``(index, table, "")``, or ``(index, None, error)`` if the chunk failed."""
    try:
        m = _get_model(model, options)
        data = task.load(m.wavelength_)
        if len(data.ids) != task.n:
            raise RuntimeError(f"chunk has {len(data.ids)} spectra, {task.n} expected")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            tab = m.predict_table(data.flux, data.ivar, snr=data.snr, ids=data.ids)
        return task.index, _finish_table(tab, data), ""
    except Exception as exc:  # noqa: BLE001 - a failed chunk is recorded, the batch goes on
        return task.index, None, f"chunk {task.index} failed: {type(exc).__name__}: {exc}"


def _failed_table(model, task: _Task, options: dict, error: str) -> Table:
    """Rows flagged LabelFlag.FAILED (NaN labels) for every spectrum of a chunk that failed as a whole."""
    m = _get_model(model, options)
    try:
        data = task.placeholder()
    except Exception:  # noqa: BLE001 - even the ids are unknown: one row per spectrum
        n = task.n
        data = ChunkData([np.zeros(0)] * n, None, np.array([f"chunk{task.index}:{i}" for i in range(n)]),
                         np.full(n, "", dtype="U1"), np.full(n, "", dtype="U1"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        tab = m.predict_table([np.zeros(0)] * len(data.ids), None, ids=data.ids)
    data.errors = np.full(len(data.ids), error)
    return _finish_table(tab, data)


# --------------------------------------------------------------------------- #
# engines: each yields (index, table or None, error) as chunks finish, in any order
# --------------------------------------------------------------------------- #
def _run_inprocess(model, tasks: Iterable[_Task], options: dict) -> Iterator[tuple[int, Table | None, str]]:
    for task in tasks:
        yield _label_task(model, task, options)


def _run_joblib(model, tasks: Iterable[_Task], options: dict, n_workers: int):
    from joblib import Parallel, delayed

    pending = {t.index: t for t in tasks}
    done: set[int] = set()
    try:
        par = Parallel(n_jobs=n_workers, backend="loky", return_as="generator_unordered",
                       pre_dispatch="2*n_jobs")
        for res in par(delayed(_label_task)(model, t, options) for t in pending.values()):
            done.add(res[0])
            yield res
    except Exception as exc:  # noqa: BLE001 - a crashed pool: the rest is recorded as failed
        for i in pending.keys() - done:
            yield i, None, f"chunk {i} not labelled: joblib pool failed ({type(exc).__name__}: {exc})"


def local_cluster(n_workers: int = 2, **kwargs):
    """A ``dask.distributed.LocalCluster`` of single-threaded worker processes, tuned for labelling.

    Dask starts worker processes with ``MALLOC_TRIM_THRESHOLD_=65536``, which
    makes glibc map and unmap every large numpy temporary: preprocessing and
    labelling then cost twice the CPU time (measured on the mock stream). The
    cluster made here leaves that variable out (BLAS stays single-threaded).
    For a cluster started elsewhere, set the Dask option
    ``distributed.nanny.pre-spawn-environ`` the same way.

    Parameters
    ----------
    n_workers : int
        Worker processes (one thread each).
    **kwargs
        Passed to ``LocalCluster`` (e.g. ``host="127.0.0.1"``); defaults:
        ``threads_per_worker=1, processes=True, dashboard_address=None``.
    """
    import dask
    from dask.distributed import LocalCluster

    env = {k: v for k, v in (dask.config.get("distributed.nanny.pre-spawn-environ") or {}).items()
           if k != "MALLOC_TRIM_THRESHOLD_"}
    kw = dict(threads_per_worker=1, processes=True, dashboard_address=None)
    kw.update(kwargs)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
        return LocalCluster(n_workers=n_workers, **kw)


def _run_dask(model, tasks: Iterable[_Task], options: dict, n_workers: int, scheduler):
    from dask.distributed import Client, as_completed

    cluster = client = None
    own = False
    if scheduler is None:
        cluster = local_cluster(n_workers)
        client = Client(cluster)
        own = True
    elif isinstance(scheduler, str):
        client = Client(scheduler)
        own = True
    else:
        client = scheduler                                   # a dask.distributed.Client
    try:
        slots = max(2 * sum(client.nthreads().values()), 2)
        it = iter(tasks)
        by_key: dict[str, _Task] = {}
        ac = as_completed()

        def submit_next() -> bool:
            t = next(it, None)
            if t is None:
                return False
            fut = client.submit(_label_task, model, t, options, pure=False)
            by_key[fut.key] = t
            ac.add(fut)
            return True

        for _ in range(slots):
            if not submit_next():
                break
        for fut in ac:
            t = by_key.pop(fut.key)
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: record, go on
                res = (t.index, None, f"chunk {t.index} failed on the cluster: {type(exc).__name__}: {exc}")
            fut.release()
            submit_next()
            yield res
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()


# --------------------------------------------------------------------------- #
# part files and the final catalogue
# --------------------------------------------------------------------------- #
def _atomic_write_table(tab: Table, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # 'dex' is not a FITS unit: written as is, read back the same
        tab.write(tmp, format="fits", overwrite=True)
    os.replace(tmp, path)


def _atomic_write_json(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _part_path(work: Path, index: int, failed: bool = False) -> Path:
    return work / f"chunk_{index:06d}{'.failed' if failed else ''}.fits"


def _string_widths(parts: Sequence[Path]) -> dict[str, int]:
    """Largest width of every string column over the part files (from their headers only)."""
    widths: dict[str, int] = {}
    for p in parts:
        h = fits.getheader(p, 1)
        for k in range(1, int(h["TFIELDS"]) + 1):
            form = str(h[f"TFORM{k}"]).strip()
            if form.endswith("A"):
                w = int(form[:-1] or 1)
                name = h[f"TTYPE{k}"]
                widths[name] = max(widths.get(name, 1), w)
    return widths


def _read_part(path: Path, widths: dict[str, int]) -> Table:
    tab = Table.read(path, format="fits", character_as_bytes=False, mask_invalid=False)
    for name, w in widths.items():
        if name in tab.colnames:
            col = tab[name]
            tab.replace_column(name, col.astype(f"U{w}"), copy=False)
            tab[name].unit, tab[name].description = col.unit, col.description
    return tab


def _hdu_bytes(tab: Table) -> tuple[fits.Header, bytes]:
    """Header and raw (unpadded) data bytes of ``tab`` as a FITS binary table, astropy-encoded."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # 'dex' is not a FITS unit: written as is
        fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(tab)]).writeto(buf)
    raw = buf.getvalue()
    with fits.open(io.BytesIO(raw)) as hdul:
        hdr = hdul[1].header.copy()
        loc = hdul[1].fileinfo()["datLoc"]
    nbytes = int(hdr["NAXIS1"]) * int(hdr["NAXIS2"])
    return hdr, raw[loc:loc + nbytes]


def _write_fits_streaming(parts: Sequence[Path], out: Path, meta: dict) -> int:
    """Concatenate the part tables into one FITS binary table, one part in memory at a time."""
    widths = _string_widths(parts)
    n_total = 0
    header = None
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(fits.PrimaryHDU().header.tostring().encode("ascii"))
        hdr_pos = f.tell()
        for i, p in enumerate(parts):
            tab = _read_part(p, widths)
            if i == 0:
                tab.meta.clear()
                tab.meta.update(meta)
            else:
                tab.meta.clear()
            hdr, data = _hdu_bytes(tab)
            if header is None:
                header = hdr
                f.write(header.tostring().encode("ascii"))  # placeholder; rewritten with NAXIS2 below
            elif [hdr.get(f"TFORM{k}") for k in range(1, hdr["TFIELDS"] + 1)] != [
                    header.get(f"TFORM{k}") for k in range(1, header["TFIELDS"] + 1)]:
                raise RuntimeError(f"{p}: columns differ from the first part's")
            f.write(data)
            n_total += len(tab)
        if header is None:
            raise RuntimeError("no part files to assemble")
        size = f.tell() - hdr_pos - len(header.tostring())
        f.write(b"\0" * ((-size) % 2880))
        header["NAXIS2"] = n_total
        f.seek(hdr_pos)
        f.write(header.tostring().encode("ascii"))  # same length: NAXIS2 is a fixed card
    os.replace(tmp, out)
    return n_total


def _write_parquet_streaming(parts: Sequence[Path], out: Path, meta: dict) -> int:
    """Concatenate the part tables into one Parquet file (one row group per part)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from astropy.table import meta as table_meta

    widths = _string_widths(parts)
    tmp = out.with_name(out.name + ".tmp")
    writer = None
    n_total = 0
    try:
        for p in parts:
            tab = _read_part(p, widths)
            tab.meta.clear()
            if writer is None:
                tab.meta.update(meta)
                md = {"table_meta_yaml": "\n".join(table_meta.get_yaml_from_table(tab))}
                for name in tab.colnames:
                    if tab[name].dtype.kind == "U":
                        md[f"table::len::{name}"] = str(tab[name].dtype.itemsize // 4)
                schema = pa.schema([(n, pa.from_numpy_dtype(tab[n].dtype.type)) for n in tab.colnames],
                                   metadata={k.encode(): v.encode() for k, v in md.items()})
                writer = pq.ParquetWriter(tmp, schema, version="2.4")
            arrays = [pa.array(np.asarray(tab[n]).astype(tab[n].dtype.newbyteorder("<"), copy=False)
                               if tab[n].dtype.kind != "U" else np.asarray(tab[n]), type=schema.field(n).type)
                      for n in tab.colnames]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            n_total += len(tab)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise RuntimeError("no part files to assemble")
    os.replace(tmp, out)
    return n_total


def _write_other(parts: Sequence[Path], out: Path, meta: dict) -> int:
    """Any other format astropy writes (CSV, ECSV, HDF5...): assembled in memory."""
    widths = _string_widths(parts)
    tab = vstack([_read_part(p, widths) for p in parts], metadata_conflicts="silent")
    tab.meta.clear()
    tab.meta.update(meta)
    tab.write(out, overwrite=True)
    return len(tab)


def _output_kind(out: Path) -> str:
    name = out.name.lower()
    if name.endswith(_PARQUET_EXT):
        return "parquet"
    if name.endswith(_FITS_EXT):
        return "fits"
    return "other"


# --------------------------------------------------------------------------- #
# the driver
# --------------------------------------------------------------------------- #
@dataclass
class BatchResult:
    """What :func:`predict_batch` did.

    Attributes
    ----------
    out : Path
        The catalogue written (None if ``assemble=False``).
    n_spectra, n_chunks : int
        Spectra and chunks in the whole batch.
    n_chunks_skipped : int
        Chunks finished by an earlier run and not redone (``resume=True``).
    n_chunks_labelled : int
        Chunks labelled by this run (including failed ones).
    failed_chunks : dict
        Chunk index -> error, for chunks that failed as a whole.
    n_failed_spectra, n_unflagged : int
        Rows of the catalogue flagged ``LabelFlag.FAILED``; rows with no flag at all.
    errors : list of str
        The first (up to 20) messages of the ``error`` column.
    seconds : float
        Wall time of this run.
    engine : str
    work_dir : Path
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

    def summary(self) -> str:
        s = (f"{self.n_spectra} spectra in {self.n_chunks} chunks ({self.n_chunks_skipped} done before, "
             f"{self.n_chunks_labelled} now, {len(self.failed_chunks)} failed), "
             f"{self.n_failed_spectra} flagged failed; {self.seconds:.1f} s on {self.engine}")
        return s


def predict_batch(model, source, out, *, fmt: str = "auto", chunk_size: int = 1000,
                  engine: str = "inprocess", n_workers: int | None = None, scheduler=None,
                  threads: int | None = None, resume: bool = False, overwrite: bool = False,
                  work_dir=None, keep_parts: bool = False, retry_failed: bool = True,
                  assemble: bool = True, progress: bool = True, low_snr: float | None = None,
                  model_options: dict | None = None) -> BatchResult:
    """Label a stream of spectra chunk by chunk into one catalogue, resumably (module docstring).

    Parameters
    ----------
    model : path or SLAM
        Model file written by :meth:`SLAM.save` (workers load it by path), or
        a fitted model (saved into ``work_dir`` for the process engines).
    source : FileSource, MockSource, ArraySource, or path(s)
        Paths and directories are read as ``FileSource(source, fmt)``.
    out : path
        Catalogue to write: ``.fits``/``.fit`` (FITS binary table, streamed),
        ``.parquet``/``.pq`` (Parquet, one row group per chunk, needs
        pyarrow), or any other format astropy writes (assembled in memory).
    fmt : {"auto", "arrays", "lamost", "boss"}
        Format of file inputs.
    chunk_size : int
        Spectra per chunk: the unit of work, of memory and of resuming.
    engine : {"inprocess", "joblib", "dask"}
    n_workers : int, optional
        Worker processes of joblib / the LocalCluster (default: the CPUs
        available). Ignored by ``inprocess`` and by an existing scheduler.
    scheduler : str or dask.distributed.Client, optional
        ``"tcp://host:port"`` of a running Dask scheduler, or a Client
        (engine ``"dask"``; None starts a LocalCluster).
    threads : int, optional
        Threads of the model inside one worker (``SLAM.n_jobs``). Default:
        all CPUs in process, 1 in each joblib / Dask worker.
    resume : bool
        Continue an interrupted run from the part files in ``work_dir``
        (same model, inputs, chunk size and options; finished chunks are
        skipped, failed ones tried again if ``retry_failed``).
    overwrite : bool
        Replace an existing catalogue and discard an earlier run's parts.
    work_dir : path, optional
        Where the parts and manifest go (default ``<out>.parts``).
    keep_parts : bool
        Keep the part files after the catalogue is written.
    assemble : bool
        Write the catalogue at the end (False: only the parts).
    progress : bool
        tqdm progress bar over spectra.
    low_snr : float, optional
        ``SLAM.low_snr`` for the flags (default: the model's).
    model_options : dict, optional
        Other :meth:`SLAM.set_params` options for prediction (e.g.
        ``{"batch_size": 128}``).

    Returns
    -------
    BatchResult

    Raises
    ------
    FileExistsError
        ``out`` exists (without ``overwrite``), or ``work_dir`` holds parts of
        an earlier run and neither ``resume`` nor ``overwrite`` is given.
    ValueError
        ``resume`` but the parts were made with another model, input or chunk size.
    """
    from .slam import SLAM

    t_start = time.perf_counter()
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    out = Path(out)
    work = Path(work_dir) if work_dir is not None else out.with_name(out.name + ".parts")
    if assemble and out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: pass overwrite=True (--overwrite) to replace it")
    src = _as_source(source, fmt)
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n_workers = int(n_workers or ncpu)

    # the model: a file whose checksum keys the manifest, shipped to workers by path
    work.mkdir(parents=True, exist_ok=True)
    if isinstance(model, SLAM):
        model_obj = model
        model_path = work / "model.npz"
        model.save(model_path)
    else:
        model_path = Path(model)
        model_obj = None
    model_sha = file_sha256(model_path)
    options = dict(model_options or {})
    if low_snr is not None:
        options["low_snr"] = float(low_snr)
    options["n_jobs"] = threads if threads is not None else (None if engine == "inprocess" else 1)
    options["verbose"] = False
    model_ref = model_obj if (engine == "inprocess" and model_obj is not None) else str(model_path)

    manifest_path = work / "manifest.json"
    key_doc = {"version": MANIFEST_VERSION, "model_sha256": model_sha, "source": src.fingerprint(),
               "chunk_size": int(chunk_size),
               "options": {k: v for k, v in sorted(options.items()) if k not in ("n_jobs", "verbose")}}
    key = hashlib.sha256(json.dumps(key_doc, sort_keys=True, default=repr).encode()).hexdigest()
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        if resume and old.get("key") != key:
            raise ValueError(f"{work} holds a run with another model, input, chunk size or options "
                             "(its manifest key differs): use overwrite=True (--overwrite) to start again")
        if not resume:
            if not overwrite:
                raise FileExistsError(f"{work} holds parts of an earlier run: pass resume=True (--resume) "
                                      "to continue it or overwrite=True (--overwrite) to start again")
            for p in work.glob("chunk_*.fits*"):
                p.unlink()
    for p in work.glob("*.tmp"):
        p.unlink()
    n_spectra = len(src)
    n_chunks = -(-n_spectra // chunk_size) if n_spectra else 0
    manifest = {"key": key, "key_doc": key_doc, "model": str(model_path), "n_spectra": n_spectra,
                "n_chunks": n_chunks, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "out": str(out), "complete": False}
    _atomic_write_json(manifest, manifest_path)

    done = {i for i in range(n_chunks) if _part_path(work, i).exists()}
    old_failed = {i for i in range(n_chunks) if _part_path(work, i, failed=True).exists()}
    if retry_failed:
        for i in old_failed:
            _part_path(work, i, failed=True).unlink()
        old_failed = set()
    skip = done | old_failed
    todo = (t for t in src.tasks(chunk_size) if t.index not in skip)
    n_todo = n_spectra - sum(t for t in _chunk_sizes(n_spectra, chunk_size, src, skip))

    failed: dict[int, str] = {}
    n_new = 0
    from tqdm.auto import tqdm

    with tqdm(total=n_todo, unit="spec", desc=f"labelling ({engine})", disable=not progress,
              smoothing=0.1) as bar:
        if engine == "inprocess":
            results = _run_inprocess(model_ref, todo, options)
        elif engine == "joblib":
            results = _run_joblib(model_ref, todo, options, n_workers)
        else:
            results = _run_dask(model_ref, todo, options, n_workers, scheduler)
        for index, tab, err in results:
            if tab is None:
                task = next(t for t in src.tasks(chunk_size) if t.index == index)
                try:
                    tab = _failed_table(model_ref, task, options, err)
                    _atomic_write_table(tab, _part_path(work, index, failed=True))
                except Exception as exc:  # noqa: BLE001 - keep going; resume will retry
                    err = f"{err}; placeholder rows not written ({exc})"
                failed[index] = err
                n_rows = task.n
            else:
                _atomic_write_table(tab, _part_path(work, index))
                n_rows = len(tab)
            n_new += 1
            bar.update(n_rows)

    result_out = None
    n_failed_spectra = n_unflagged = 0
    errors: list[str] = []
    parts = [(_part_path(work, i) if _part_path(work, i).exists() else _part_path(work, i, failed=True))
             for i in range(n_chunks)]
    missing = [p for p in parts if not p.exists()]
    if assemble and n_chunks and not missing:
        meta = {"MODEL": "(in-memory SLAM model)" if model_obj is not None else str(model_path),
                "MODELSHA": model_sha[:16], "NCHUNKS": n_chunks,
                "LABELS": ",".join(_get_model(model_ref, options).label_names_)}
        kind = _output_kind(out)
        writer = {"fits": _write_fits_streaming, "parquet": _write_parquet_streaming}.get(kind, _write_other)
        if out.exists():
            out.unlink()
        writer(parts, out, meta)
        result_out = out
        for p in parts:
            data = fits.getdata(p, 1)
            flags = np.asarray(data["flag"])
            n_failed_spectra += int(np.sum(flags & LabelFlag.FAILED > 0))
            n_unflagged += int(np.sum(flags == 0))
            if len(errors) < 20:
                errors.extend(e for e in np.asarray(data["error"]).astype(str) if e.strip())
                errors = errors[:20]
        manifest["complete"] = True
        _atomic_write_json(manifest, manifest_path)
        if not keep_parts:
            shutil.rmtree(work)
    elif assemble and missing:
        warnings.warn(f"{len(missing)} chunk(s) have no part file; catalogue not written", stacklevel=2)
    return BatchResult(result_out, n_spectra, n_chunks, len(skip), n_new, failed, n_failed_spectra,
                       n_unflagged, errors, time.perf_counter() - t_start, engine, work)


def _chunk_sizes(n: int, chunk_size: int, src, indices: Iterable[int]) -> Iterator[int]:
    """Sizes of the chunks ``indices`` (all full except the last)."""
    n_chunks = -(-n // chunk_size) if n else 0
    for i in indices:
        yield chunk_size if i < n_chunks - 1 else n - chunk_size * (n_chunks - 1)
