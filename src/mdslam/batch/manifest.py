"""The work directory of a batch run: part files, manifest, lock, and the checks before assembly.

A run keeps its finished chunks in a *work directory* that it makes itself
(``<out>.parts/``, or ``<work_dir>/<out name>.parts/``) and marks with the
file :data:`WORK_MARKER`; only a directory holding that marker is ever
cleaned, and only of the files a run writes (:data:`RUN_FILES`, part files),
so a directory a user names is never emptied.

Each part file ``chunk_NNNNNN.fits`` (``.failed.fits`` for a chunk whose
rows are placeholders) is a FITS binary table whose header names its chunk
(``CHUNK``, ``CHUNKID``: a hash of the run key and the chunk's rows),
its row count (``NROWS``) and carries FITS ``CHECKSUM``/``DATASUM`` cards.
:func:`verify_part` checks all of them; a part that fails (truncated,
empty, copied from another chunk, made for other rows) is redone.

The lock file ``lock`` holds the pid, host and start time of the run
using the directory; a second run is refused with those, and the lock of
a process that no longer exists on this host is taken over.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

__all__ = ["BatchError", "BatchLocked", "WORK_MARKER", "atomic_path", "verify_part"]

WORK_MARKER = ".mdslam-batch"
"""Name of the file that marks a work directory as made by :func:`predict_batch`."""
MANIFEST = "manifest.json"
LOCK = "lock"
SAVED_MODEL = "model.npz"
RUN_FILES = (MANIFEST, LOCK, SAVED_MODEL, WORK_MARKER)
"""Files a run may write in its work directory besides the part files."""


class BatchError(ValueError):
    """A batch run cannot start or go on: the message names the file or option and the problem."""


class BatchLocked(BatchError):
    """Another run holds the lock of the work directory."""


# --------------------------------------------------------------------------- #
# one atomic write for every file
# --------------------------------------------------------------------------- #
@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it (``os.replace``) when the block succeeds.

    The temporary name keeps ``path``'s name as its ending (writers that pick
    the format from the extension still do) and is removed if the block
    raises, so readers only ever see a complete file or none.

    Parameters
    ----------
    path : path
        File to write.

    Yields
    ------
    Path
        Where to write.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(obj: dict, path: Path) -> None:
    """``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))


# --------------------------------------------------------------------------- #
# work directory and lock
# --------------------------------------------------------------------------- #
def work_dir_for(out: Path, work_dir: str | os.PathLike | None) -> Path:
    """The directory a run owns: ``<out>.parts`` or ``<work_dir>/<out name>.parts``."""
    name = out.name + ".parts"
    return out.with_name(name) if work_dir is None else Path(work_dir) / name


def claim_work_dir(work: Path) -> None:
    """Make ``work`` (with its marker), or accept it if an earlier run made it.

    Raises
    ------
    BatchError
        ``work`` exists, is not empty and has no marker: it was not made by a
        run, and a run never writes into (or cleans) such a directory.
    """
    if work.exists() and not work.is_dir():
        raise BatchError(f"work directory {work} is a file: choose another work_dir (--work-dir)")
    if work.is_dir() and not (work / WORK_MARKER).exists() and any(work.iterdir()):
        raise BatchError(f"work directory {work} exists and was not made by a batch run (no {WORK_MARKER} "
                         "file): choose another work_dir (--work-dir) or move that directory")
    if (work / WORK_MARKER).exists():
        return
    adopted = work.is_dir()             # an empty directory someone made: used, never removed
    work.mkdir(parents=True, exist_ok=True)
    (work / WORK_MARKER).write_text(("adopted" if adopted else "made") + ": part files of an mdslam batch "
                                    "run, removed when the catalogue is written\n")


def remove_work_dir(work: Path) -> bool:
    """Delete the files a run wrote in ``work``, then ``work`` itself if nothing else is left.

    Returns
    -------
    bool
        True if the directory is gone; False if it still holds files no run
        wrote (they are left alone) or existed, empty, before the run.
    """
    if not (work / WORK_MARKER).exists():
        return False
    for p in part_files(work):
        p.unlink()
    for p in work.glob(".tmp*-chunk_*"):
        p.unlink()
    for name in RUN_FILES:
        if name != WORK_MARKER and (work / name).exists():
            (work / name).unlink()
    if any(p.name != WORK_MARKER for p in work.iterdir()):
        return False
    adopted = (work / WORK_MARKER).read_text().startswith("adopted")
    (work / WORK_MARKER).unlink()
    if adopted:
        return False
    work.rmdir()
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def work_lock(work: Path) -> Iterator[dict]:
    """Hold ``work/lock`` for the block (see the module docstring).

    Yields
    ------
    dict
        The lock's content; ``"took_over"`` holds the stale lock replaced, if any.

    Raises
    ------
    BatchLocked
        A live process (or one on another host) holds the lock.
    """
    path = work / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    took_over = None
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                other = json.loads(path.read_text())
            except (OSError, ValueError):
                other = {}
            pid, host = int(other.get("pid", -1)), str(other.get("host", "?"))
            if host == me["host"] and pid > 0 and not _pid_alive(pid):
                warnings.warn(f"{path}: taking over the lock of process {pid}, which no longer runs "
                              f"(started {other.get('started', '?')})", stacklevel=3)
                took_over = other
                path.unlink(missing_ok=True)
                continue
            raise BatchLocked(f"{work} is in use by process {pid} on {host} (started "
                              f"{other.get('started', '?')}): wait for it, or remove {path} if that "
                              "run is gone") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise BatchLocked(f"{path}: could not take the lock")
    try:
        yield {**me, "took_over": took_over}
    finally:
        try:
            if json.loads(path.read_text()).get("pid") == me["pid"]:
                path.unlink()
        except (OSError, ValueError):
            pass


# --------------------------------------------------------------------------- #
# part files
# --------------------------------------------------------------------------- #
def part_path(work: Path, index: int, failed: bool = False) -> Path:
    """``work/chunk_NNNNNN.fits`` (``.failed.fits`` for placeholder rows)."""
    return work / f"chunk_{index:06d}{'.failed' if failed else ''}.fits"


def part_files(work: Path) -> list[Path]:
    """Every part file in ``work``."""
    return sorted(work.glob("chunk_[0-9][0-9][0-9][0-9][0-9][0-9]*.fits"))


def chunk_id(key: str, identity: str) -> str:
    """The name of one chunk of one run: 16 hex digits of SHA-256(run key, chunk identity)."""
    return hashlib.sha256(f"{key}\n{identity}".encode()).hexdigest()[:16]


def table_hdu(tab: Table) -> fits.BinTableHDU:
    """``tab`` as a FITS binary table, keeping what ``fits.table_to_hdu`` drops.

    A unit the FITS standard does not define (``dex``) is still written as
    ``TUNITn`` (astropy reads it back as an unrecognised unit of that name);
    a column description becomes ``TCOMMn`` (the usual FITS convention).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # the 'dex' warning: the unit is written below
        hdu = fits.table_to_hdu(tab)
    for k, name in enumerate(tab.colnames, start=1):
        col = tab[name]
        if col.unit is not None and f"TUNIT{k}" not in hdu.header:
            hdu.header.insert(f"TFORM{k}", (f"TUNIT{k}", str(col.unit)), after=True)
        if col.description:
            hdu.header.insert(f"TFORM{k}", (f"TCOMM{k}", col.description), after=True)
    return hdu


def write_part(tab: Table, path: Path, index: int, cid: str) -> None:
    """Write one chunk's rows with its identity, row count and FITS checksums, atomically."""
    hdu = table_hdu(tab)
    hdu.header["CHUNK"] = (index, "chunk index in the run")
    hdu.header["CHUNKID"] = (cid, "hash of the run key and the chunk's rows")
    hdu.header["NROWS"] = (len(tab), "rows of this chunk")
    with atomic_path(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp, checksum=True)


def verify_part(path: Path, index: int, cid: str, n_rows: int) -> str:
    """Why the part file ``path`` is not chunk ``index`` of this run ("" if it is).

    Checks, in order: it opens as FITS with a binary table; its FITS checksums
    hold; its ``CHUNK`` and ``CHUNKID`` name this chunk; ``NROWS`` and the
    table length equal the chunk's ``n_rows``.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, checksum=True) as hdul:
                if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
                    return f"{path.name}: no binary table"
                h = hdul[1].header
                _ = hdul[1].data
    except Exception as exc:  # noqa: BLE001 - any unreadable part is redone
        return f"{path.name}: unreadable ({type(exc).__name__}: {exc})"
    if any("verification failed" in str(w.message) for w in caught):
        return f"{path.name}: checksum mismatch (damaged)"
    if h.get("CHUNK") != index or h.get("CHUNKID") != cid:
        return f"{path.name}: made for another chunk or run (CHUNK={h.get('CHUNK')}, CHUNKID={h.get('CHUNKID')})"
    if h.get("NROWS") != n_rows or h.get("NAXIS2") != n_rows:
        return f"{path.name}: {h.get('NAXIS2')} rows, chunk has {n_rows}"
    return ""


def check_parts(work: Path, plan: list[tuple[int, int, str]]) -> tuple[dict[int, Path], dict[int, str]]:
    """The verified part of every chunk of ``plan`` and the problems of the others.

    Parameters
    ----------
    work : Path
    plan : list of (index, n_rows, chunk id)
        Every chunk of the run.

    Returns
    -------
    good : dict
        Chunk index -> its part file (a finished part preferred over a failed one).
    bad : dict
        Chunk index -> why no part of it can be used (missing or damaged).
    """
    good: dict[int, Path] = {}
    bad: dict[int, str] = {}
    for index, n, cid in plan:
        problems = []
        for failed in (False, True):
            p = part_path(work, index, failed)
            if p.exists():
                why = verify_part(p, index, cid, n)
                if not why:
                    good[index] = p
                    break
                problems.append(why)
        if index not in good:
            bad[index] = "; ".join(problems) or "no part file"
    return good, bad


def count_flags(parts: list[Path], failed_bit: int, n_errors: int = 20) -> tuple[int, int, list[str]]:
    """Rows flagged ``failed_bit``, rows with no flag, and the first ``n_errors`` error messages."""
    n_failed = n_unflagged = 0
    errors: list[str] = []
    for p in parts:
        data = fits.getdata(p, 1)
        flags = np.asarray(data["flag"])
        n_failed += int(np.sum(flags & failed_bit > 0))
        n_unflagged += int(np.sum(flags == 0))
        if len(errors) < n_errors:
            errors.extend(e for e in np.asarray(data["error"]).astype(str) if e.strip())
    return n_failed, n_unflagged, errors[:n_errors]
