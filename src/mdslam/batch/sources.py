"""Sources of spectra for :func:`mdslam.batch.predict_batch`, and the chunk tasks cut from them.

A *source* (:class:`FileSource`, :class:`MockSource`, :class:`ArraySource`)
knows how many spectra it holds, a fingerprint of its content (which keys a
resumable run) and how to cut itself into *tasks*: small picklable
descriptions of one chunk that a worker process turns into a
:class:`ChunkData` (``task.load(grid)``). A task also names its chunk
(``task.identity()``): a part file carries that name, so a part made for
other rows is never mistaken for this chunk's.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .manifest import WORK_MARKER

__all__ = ["ArraySource", "ChunkData", "FileSource", "MockSource", "expand_inputs"]

_PATTERNS = {
    "auto": ("*.npz", "*.fits", "*.fit", "*.fits.gz"),
    "arrays": ("*.npz", "*.fits", "*.fit", "*.fits.gz"),
    "lamost": ("*.fits", "*.fits.gz", "*.fit"),
    "boss": ("spec-*.fits", "spec-*.fits.gz"),
}


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
        Files inside a work directory of :func:`predict_batch` (the part
        files of a run) are never taken as inputs.
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
            out.extend(sorted(f for f in found if f.is_file() and not _in_work_dir(f)))
        else:
            out.append(p)
    return out


def _in_work_dir(path: Path) -> bool:
    """True for a file in a directory that holds a batch run's marker file (its part files)."""
    return (path.parent / WORK_MARKER).exists()


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
    from ..slam_io import _pick

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

    def identity(self) -> str:
        """What this chunk holds (rows of which input), as text: equal identities, equal rows."""
        return json.dumps({"index": self.index, "n": self.n})


_ARRAYS_CACHE: dict[str, tuple[tuple, Any]] = {}


def _read_arrays_cached(path: Path):
    """:func:`read_spectra_arrays` of one file, remembering the last file read (chunks of a big file)."""
    from ..slam_io import read_spectra_arrays

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

    def identity(self) -> str:
        return json.dumps({"index": self.index, "n": self.n, "fmt": self.fmt,
                           "pieces": [[str(p), r0, r1] for p, r0, r1 in self.pieces]})

    def _load_spectrum_files(self, grid: np.ndarray) -> ChunkData:
        from .. import preprocess, spectra

        reader = spectra.read_lamost if self.fmt == "lamost" else spectra.read_boss
        paths = [p for p, _, _ in self.pieces]
        sp = reader(paths, on_error="flag")
        meta = sp.meta
        errors = np.array([f"{f}: {r}" if fl else "" for f, r, fl in
                           zip(meta["file"], meta["flag_reason"], meta["flag"], strict=True)], str)
        ids, files = np.asarray(meta["id"]).astype(str), np.asarray(meta["file"]).astype(str)
        if np.all(np.char.str_len(errors) > 0):
            # no file of the chunk could be read: nothing to preprocess, each row keeps its reason
            return ChunkData([np.zeros(0)] * len(ids), None, ids, files, errors)
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
    from ..mock import MockSurvey

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

    def identity(self) -> str:
        return json.dumps({"index": self.index, "n": self.n, "start": self.start})

    def load(self, grid: np.ndarray) -> ChunkData:
        from ..preprocess import preprocess

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
        """What the run key is made of: the inputs' identity (JSON-serialisable dict)."""
        h = hashlib.sha256()
        for p in self.paths:
            try:
                st = p.stat()
                h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{p}|missing\n".encode())
        return {"kind": "files", "fmt": self.fmt, "n_files": len(self.paths), "files_sha256": h.hexdigest()}

    def tasks(self, chunk_size: int) -> Iterator[_Task]:
        """The chunks of ``chunk_size`` spectra (the last one shorter), in order, as picklable tasks."""
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
            from ..mock import MockSurvey

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
        """What the run key is made of: the inputs' identity (JSON-serialisable dict)."""
        return {"kind": "mock", "n": self.n, "start": self.start,
                "survey": {k: (v if isinstance(v, (int, float, str, tuple, list, type(None))) else repr(v))
                           for k, v in sorted(self.kwargs.items())},
                "preprocess": repr(sorted(self.preprocess_kwargs.items()))}

    def tasks(self, chunk_size: int) -> Iterator[_Task]:
        """The chunks of ``chunk_size`` spectra (the last one shorter), in order, as picklable tasks."""
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
        """What the run key is made of: the inputs' identity (JSON-serialisable dict)."""
        h = hashlib.sha256(np.ascontiguousarray(self.flux).tobytes())
        for a in (self.ivar, self.snr):
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
        h.update("\n".join(self.ids).encode())
        return {"kind": "arrays", "n": len(self), "sha256": h.hexdigest()}

    def tasks(self, chunk_size: int) -> Iterator[_Task]:
        """The chunks of ``chunk_size`` spectra (the last one shorter), in order, as picklable tasks."""
        for k, i0 in enumerate(range(0, len(self), chunk_size)):
            sl = slice(i0, min(i0 + chunk_size, len(self)))
            yield _ArrayTask(k, sl.stop - sl.start, self.flux[sl],
                             None if self.ivar is None else self.ivar[sl], self.ids[sl],
                             None if self.snr is None else self.snr[sl])


def _as_source(source, fmt: str):
    if hasattr(source, "tasks") and hasattr(source, "fingerprint"):
        return source
    from ..mock import MockSurvey

    if isinstance(source, MockSurvey):
        raise TypeError("wrap a MockSurvey as MockSource(survey, n=...) to say how many spectra")
    return FileSource(source, fmt=fmt)


