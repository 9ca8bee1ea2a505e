"""Batch labelling never loses work: user directories, crashed workers, changed inputs, damaged parts, locks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import test_batch as tb
from astropy.io import fits

from mdslam import batch, cli
from mdslam.batch import ArraySource, FileSource, predict_batch
from mdslam.batch.sources import _ArrayTask

CHUNK, assert_same_catalogue, make_spectra, read = tb.CHUNK, tb.assert_same_catalogue, tb.make_spectra, tb.read
model_file, inputs, reference = tb.model_file, tb.inputs, tb.reference       # the fixtures of test_batch


def _same_rows(ref, cat) -> None:
    """Same catalogue except the ``error`` texts, which name the input files by their (other) path."""
    assert_same_catalogue(ref[[c for c in ref.colnames if c != "error"]], cat[[c for c in cat.colnames if c != "error"]])
    assert np.array_equal(np.char.str_len(np.asarray(ref["error"])) > 0, np.char.str_len(np.asarray(cat["error"])) > 0)


def _tree(path: Path) -> dict[str, bytes]:
    """Every file below ``path`` with its bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- #
# 1. a directory the user names is never emptied
# --------------------------------------------------------------------------- #
def test_work_dir_inside_the_input_directory_deletes_nothing_of_the_user(model_file, inputs, reference,
                                                                        tmp_path):
    spectra = tmp_path / "spectra"
    shutil.copytree(inputs[0], spectra)
    (spectra / "notes.txt").write_text("an unrelated file")
    before = _tree(spectra)
    out = tmp_path / "labels.fits"
    res = predict_batch(model_file, FileSource([spectra]), out, chunk_size=CHUNK, threads=1,
                        work_dir=spectra, progress=False)
    assert res.work_dir == spectra / "labels.fits.parts"             # a subdirectory the run made
    assert _tree(spectra) == before                                   # inputs and the unrelated file intact
    assert not res.work_dir.exists()                                  # its own subdirectory removed
    _same_rows(reference[1], read(out))


def test_work_dir_dot_through_the_cli_keeps_model_inputs_and_documents(model_file, inputs, reference, tmp_path,
                                                                       monkeypatch):
    shutil.copy(model_file, tmp_path / "model.npz")
    shutil.copytree(inputs[0], tmp_path / "spectra")
    (tmp_path / "paper.md").write_text("an unrelated document")
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    argv = ["predict", "--model", "model.npz", "--out", "labels.fits", "--chunk-size", str(CHUNK),
            "--threads", "1", "--work-dir", ".", "spectra"]
    assert cli.main(argv) == 0
    after = _tree(tmp_path)
    assert {k: v for k, v in after.items() if k != "labels.fits"} == before
    _same_rows(reference[1], read(tmp_path / "labels.fits"))


def test_existing_directory_not_made_by_a_run_is_refused_and_left_alone(model_file, inputs, tmp_path):
    out = tmp_path / "labels.fits"
    user_dir = tmp_path / "labels.fits.parts"
    user_dir.mkdir()
    (user_dir / "chunk_000000.fits").write_text("a user's file that happens to have this name")
    with pytest.raises(batch.BatchError, match="not made by a batch run"):
        predict_batch(model_file, FileSource([inputs[0]]), out, chunk_size=CHUNK, progress=False)
    assert [p.name for p in user_dir.iterdir()] == ["chunk_000000.fits"] and not out.exists()


def test_empty_directory_made_by_the_user_is_used_and_kept(model_file, inputs, tmp_path):
    (tmp_path / "labels.fits.parts").mkdir()
    res = predict_batch(model_file, FileSource([inputs[0]]), tmp_path / "labels.fits", chunk_size=100,
                        threads=1, progress=False)
    assert res.out.exists() and res.work_dir.is_dir() and list(res.work_dir.iterdir()) == []


def test_recursive_input_never_reads_the_runs_own_part_files(model_file, inputs, tmp_path):
    spectra = tmp_path / "spectra"
    shutil.copytree(inputs[0], spectra)
    out = tmp_path / "labels.fits"
    predict_batch(model_file, FileSource([spectra], recursive=True), out, chunk_size=CHUNK, threads=1,
                  work_dir=spectra, assemble=False, progress=False)
    assert len(list((spectra / "labels.fits.parts").glob("chunk_*.fits"))) == 6
    assert len(FileSource([spectra], recursive=True)) == 231              # the parts are not inputs


# --------------------------------------------------------------------------- #
# 2. a worker killed mid-run
# --------------------------------------------------------------------------- #
class _KillingTask(_ArrayTask):
    """An array chunk whose first load (``once``) or every load kills the worker process (SIGKILL)."""

    marker: str = ""
    always: bool = False

    def load(self, grid):
        if self.always or not os.path.exists(self.marker):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)                  # what the OOM killer does
        return super().load(grid)


class KillingSource(ArraySource):
    """An ArraySource (same fingerprint) whose chunk ``kill_index`` kills its worker."""

    def __init__(self, flux, ivar, kill_index, marker, always=False):
        super().__init__(flux, ivar)
        self.kill_index, self.marker, self.always = kill_index, str(marker), always

    def tasks(self, chunk_size):
        for t in super().tasks(chunk_size):
            if t.index == self.kill_index:
                t = _KillingTask(t.index, t.n, t.flux, t.ivar, t.ids, t.snr)
                t.marker, t.always = self.marker, self.always
            yield t


@pytest.fixture(scope="module")
def arrays():
    flux, ivar, _ = make_spectra(120, seed=11)
    return flux, ivar


@pytest.mark.slow                      # two worker pools started (about 70 s on a loaded 2-core machine)
def test_joblib_worker_killed_once_is_recovered_like_dask(model_file, arrays, tmp_path):
    flux, ivar = arrays
    ref_out = tmp_path / "ref.fits"
    predict_batch(model_file, ArraySource(flux, ivar), ref_out, chunk_size=20, threads=1, progress=False)
    out = tmp_path / "labels.fits"
    with pytest.warns(UserWarning, match="run again"):
        res = predict_batch(model_file, KillingSource(flux, ivar, 2, tmp_path / "killed"), out, chunk_size=20,
                            engine="joblib", n_workers=2, progress=False)
    assert (tmp_path / "killed").exists()                             # the worker really died
    assert not res.lost_chunks and not res.failed_chunks and res.out == out
    assert_same_catalogue(read(ref_out), read(out))                    # every row, labelled, once


@pytest.mark.slow                      # three worker pools started (about 70 s on a loaded 2-core machine)
def test_chunk_that_always_kills_its_worker_leaves_the_run_resumable(model_file, arrays, tmp_path):
    flux, ivar = arrays
    out = tmp_path / "labels.fits"
    with pytest.warns(UserWarning, match="run again"):
        res = predict_batch(model_file, KillingSource(flux, ivar, 3, tmp_path / "k", always=True), out,
                            chunk_size=20, engine="joblib", n_workers=2, progress=False)
    assert list(res.lost_chunks) == [3] and res.out is None and not out.exists()
    parts = sorted(p.name for p in res.work_dir.glob("chunk_*.fits"))
    assert parts == [f"chunk_{i:06d}.fits" for i in (0, 1, 2, 4, 5)]  # nothing deleted, no fake rows
    res2 = predict_batch(model_file, ArraySource(flux, ivar), out, chunk_size=20, engine="inprocess",
                         threads=1, resume=True, progress=False)
    assert res2.n_chunks_skipped == 5 and res2.n_chunks_labelled == 1 and not res2.lost_chunks
    ref = tmp_path / "ref.fits"
    predict_batch(model_file, ArraySource(flux, ivar), ref, chunk_size=20, threads=1, progress=False)
    assert_same_catalogue(read(ref), read(out))


class LosingEngine(batch.engines.InProcessEngine):
    """The in-process engine, except that chunk ``index`` is lost (as to a killed worker) ``times`` times."""

    def __init__(self, index, times):
        self.index, self.times, self.attempts = index, times, 0

    def run(self, model, tasks, options):
        for t in tasks:
            if t.index == self.index and self.attempts < self.times:
                self.attempts += 1
                yield batch.engines.Outcome(t.index, None, f"chunk {t.index} lost: worker killed", lost=True)
            else:
                yield from super().run(model, [t], options)


def test_lost_chunk_is_run_again_in_the_same_run(model_file, inputs, reference, tmp_path, monkeypatch):
    engine = LosingEngine(index=2, times=1)
    monkeypatch.setattr(batch.driver, "make_engine", lambda *a: engine)
    with pytest.warns(UserWarning, match="1 chunk.s. lost by the inprocess engine are run again"):
        res = predict_batch(model_file, FileSource([inputs[0]]), tmp_path / "labels.fits", chunk_size=CHUNK,
                            threads=1, progress=False)
    assert engine.attempts == 1 and not res.lost_chunks and res.n_chunks_labelled == 6
    assert_same_catalogue(reference[1], read(tmp_path / "labels.fits"))


def test_chunk_lost_every_time_fails_the_cli_and_keeps_the_parts_for_resume(model_file, inputs, reference,
                                                                            tmp_path, monkeypatch, capsys):
    engine = LosingEngine(index=3, times=10**6)
    monkeypatch.setattr(batch.driver, "make_engine", lambda *a: engine)
    out = tmp_path / "labels.fits"
    argv = ["predict", "--model", str(model_file), "--out", str(out), "--chunk-size", str(CHUNK),
            "--threads", "1", str(inputs[0])]
    with pytest.warns(UserWarning, match="run again"):
        assert cli.main(argv) == 1                                   # non-zero while a chunk is missing
    err = capsys.readouterr().err
    assert "error: chunk 3: chunk 3 lost" in err and "--resume" in err
    assert engine.attempts == 1 + batch.driver.MAX_ROUNDS_WITHOUT_PROGRESS
    work = tmp_path / "labels.fits.parts"
    assert not out.exists()
    assert sorted(p.name for p in work.glob("chunk_*")) == [f"chunk_{i:06d}.fits" for i in (0, 1, 2, 4, 5)]
    monkeypatch.undo()
    assert cli.main([*argv, "--resume"]) == 0                        # the catalogue exists only now
    assert "5 resumed" in capsys.readouterr().out
    assert_same_catalogue(reference[1], read(out))


# --------------------------------------------------------------------------- #
# 3. parts carry their chunk's identity; changed inputs and damaged parts are redone
# --------------------------------------------------------------------------- #
def _npz_bytes(tmp_path, name, n, seed):
    flux, ivar, _ = make_spectra(n, seed=seed)
    p = tmp_path / f"{name}_tmp.npz"
    np.savez(p, flux=flux, ivar=ivar, id=np.array([f"{name}{i:02d}" for i in range(n)]))
    data = p.read_bytes()
    p.unlink()
    return data


def test_resume_after_a_file_became_readable_redoes_the_shifted_chunks(model_file, tmp_path, monkeypatch):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.npz").write_bytes(_npz_bytes(tmp_path, "a", 30, 1))
    b = _npz_bytes(tmp_path, "b", 10, 2)
    (d / "b.npz").write_bytes(b"\0" * len(b))                            # unreadable: counted as 1 row
    (d / "c.npz").write_bytes(_npz_bytes(tmp_path, "c", 35, 3))
    os.utime(d / "b.npz", ns=(10**18, 10**18))
    real = batch.engines._label_task
    calls: list[int] = []

    def stop_after_five(m, t, o):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(t.index)
        return real(m, t, o)

    monkeypatch.setattr(batch.engines, "_label_task", stop_after_five)
    out = tmp_path / "labels.fits"
    with pytest.raises(KeyboardInterrupt):
        predict_batch(model_file, FileSource([d]), out, chunk_size=10, threads=1, progress=False)
    assert json.loads((tmp_path / "labels.fits.parts" / "manifest.json").read_text())["n_spectra"] == 66
    (d / "b.npz").write_bytes(b)                                       # now readable: same size, same mtime
    os.utime(d / "b.npz", ns=(10**18, 10**18))
    calls.clear()
    monkeypatch.setattr(batch.engines, "_label_task", lambda m, t, o: (calls.append(t.index), real(m, t, o))[1])
    res = predict_batch(model_file, FileSource([d]), out, chunk_size=10, threads=1, resume=True, progress=False)
    assert calls == [3, 4, 5, 6, 7]             # chunks 0-2 kept; 3-4 were made for other rows; 5-7 new
    cat = read(out)
    expect = [f"a{i:02d}" for i in range(30)] + [f"b{i:02d}" for i in range(10)] + [f"c{i:02d}" for i in range(35)]
    assert res.n_spectra == 75 and list(cat["id"]) == expect            # 75 rows, none missing, none twice
    assert not np.any(cat["flag"] & batch.engines.LabelFlag.FAILED)


def test_damaged_parts_are_detected_and_redone(model_file, inputs, reference, tmp_path, monkeypatch):
    out = tmp_path / "labels.fits"
    res = predict_batch(model_file, FileSource([inputs[0]]), out, chunk_size=CHUNK, threads=1, assemble=False,
                        progress=False)
    work = res.work_dir
    part = [work / f"chunk_{i:06d}.fits" for i in range(6)]
    hdr = fits.getheader(part[2], 1)
    assert (hdr["CHUNK"], hdr["NROWS"], len(hdr["CHUNKID"])) == (2, CHUNK, 16) and "DATASUM" in hdr
    raw = part[1].read_bytes()
    part[1].write_bytes(raw[: len(raw) // 2])                          # truncated
    part[2].write_bytes(b"")                                           # zero bytes
    shutil.copy(part[0], part[3])                                      # copied from another chunk
    raw = bytearray(part[4].read_bytes())
    raw[-2880 - 100] ^= 0x01                                           # one bit flipped in the data
    part[4].write_bytes(bytes(raw))
    real = batch.engines._label_task
    calls: list[int] = []
    monkeypatch.setattr(batch.engines, "_label_task", lambda m, t, o: (calls.append(t.index), real(m, t, o))[1])
    with pytest.warns(UserWarning, match="redone") as rec:
        predict_batch(model_file, FileSource([inputs[0]]), out, chunk_size=CHUNK, threads=1, resume=True,
                      progress=False)
    why = " ".join(str(w.message) for w in rec)
    assert "another chunk" in why and "checksum" in why and "unreadable" in why
    assert calls == [1, 2, 3, 4]
    assert_same_catalogue(reference[1], read(out))


def test_part_damaged_after_it_was_written_is_redone_before_assembly(model_file, inputs, reference, tmp_path,
                                                                     monkeypatch):
    real_write = batch.manifest.write_part
    writes: list[int] = []

    def write_then_damage(tab, path, index, cid):
        real_write(tab, path, index, cid)
        writes.append(index)
        if writes.count(1) == 1 and index == 1:
            path.write_bytes(path.read_bytes()[:-2880])               # the disk loses its last block
    monkeypatch.setattr(batch.manifest, "write_part", write_then_damage)
    out = tmp_path / "labels.fits"
    with pytest.warns(UserWarning, match="chunk 1 is redone"):
        res = predict_batch(model_file, FileSource([inputs[0]]), out, chunk_size=CHUNK, threads=1, progress=False)
    assert writes == [0, 1, 2, 3, 4, 5, 1] and res.out == out
    assert_same_catalogue(reference[1], read(out))


@pytest.mark.slow                      # a Dask LocalCluster of 2 processes, one restarted by its nanny
def test_dask_worker_killed_once_is_recovered(model_file, arrays, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    flux, ivar = arrays
    ref_out = tmp_path / "ref.fits"
    predict_batch(model_file, ArraySource(flux, ivar), ref_out, chunk_size=20, threads=1, progress=False)
    out = tmp_path / "labels.fits"
    with batch.local_cluster(2, host="127.0.0.1") as cluster, distributed.Client(cluster) as client:
        res = predict_batch(model_file, KillingSource(flux, ivar, 2, tmp_path / "killed"), out, chunk_size=20,
                            engine="dask", scheduler=client, progress=False)
    assert (tmp_path / "killed").exists() and not res.lost_chunks and not res.failed_chunks
    assert_same_catalogue(read(ref_out), read(out))


# --------------------------------------------------------------------------- #
# 4. a lock keeps two runs off the same output
# --------------------------------------------------------------------------- #
def _lock(work: Path, pid: int) -> None:
    work.mkdir()
    (work / batch.manifest.WORK_MARKER).write_text("")
    (work / "lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                           "started": "2026-01-02T03:04:05+0000"}))


def test_second_run_is_refused_naming_the_holder(model_file, inputs, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(tmp_path / "labels.fits.parts", holder.pid)
        with pytest.raises(batch.BatchLocked) as exc:
            predict_batch(model_file, FileSource([inputs[0]]), tmp_path / "labels.fits", progress=False)
    finally:
        holder.kill()
        holder.wait()
    msg = str(exc.value)
    assert f"process {holder.pid} on {socket.gethostname()}" in msg and "2026-01-02T03:04:05" in msg


def test_stale_lock_of_a_dead_process_is_taken_over(model_file, inputs, reference, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lock(tmp_path / "labels.fits.parts", dead.pid)
    with pytest.warns(UserWarning, match=f"taking over the lock of process {dead.pid}"):
        predict_batch(model_file, FileSource([inputs[0]]), tmp_path / "labels.fits", chunk_size=CHUNK,
                      threads=1, progress=False)
    assert_same_catalogue(reference[1], read(tmp_path / "labels.fits"))


def test_lock_is_held_while_chunks_run_and_released_after(model_file, inputs, tmp_path, monkeypatch):
    real = batch.engines._label_task
    seen = []

    def look(m, t, o):
        seen.append(json.loads((tmp_path / "labels.fits.parts" / "lock").read_text())["pid"])
        return real(m, t, o)

    monkeypatch.setattr(batch.engines, "_label_task", look)
    res = predict_batch(model_file, FileSource([inputs[0]]), tmp_path / "labels.fits", chunk_size=100,
                        threads=1, keep_parts=True, progress=False)
    assert seen == [os.getpid()] * 3 and not (res.work_dir / "lock").exists()
