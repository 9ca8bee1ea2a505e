"""``mdslam predict`` on bad input: one-line errors before any chunk runs, Ctrl-C, SIGTERM; outputs users open."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pooch
import pytest
import test_batch as tb
from astropy.io import fits

import mdslam
from mdslam import batch, cli
from mdslam.batch import FileSource, predict_batch

CHUNK, make_spectra, read = tb.CHUNK, tb.make_spectra, tb.read
model_file, inputs, reference = tb.model_file, tb.inputs, tb.reference       # the fixtures of test_batch


@pytest.fixture
def no_chunk_runs(monkeypatch):
    """Fail the test if any chunk is labelled."""
    calls: list[int] = []
    real = batch.engines._label_task
    monkeypatch.setattr(batch.engines, "_label_task", lambda m, t, o: (calls.append(t.index), real(m, t, o))[1])
    yield calls
    assert calls == [], "a chunk ran before the error was found"


def predict(capsys, *args):
    """Run ``mdslam predict``; return (status, stdout, stderr)."""
    status = cli.main(["predict", *map(str, args)])
    cap = capsys.readouterr()
    return status, cap.out, cap.err


def one_line_error(err: str) -> str:
    """The error line of stderr; fails on a traceback or on more than one error line."""
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- #
# one-line errors, found before the labelling
# --------------------------------------------------------------------------- #
def test_output_problems_are_found_before_labelling(model_file, inputs, tmp_path, capsys, no_chunk_runs):
    spectra = inputs[0]
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_dir").mkdir()
    cases = {
        tmp_path / "a_file" / "labels.fits": "a_file is not a directory",
        tmp_path / "missing" / "labels.fits": "missing does not exist",
        tmp_path / "a_dir": "is a directory",
        tmp_path / "labels.xyz": "unknown catalogue extension '.xyz'",
    }
    for out, what in cases.items():
        status, _, err = predict(capsys, "--model", model_file, "--out", out, spectra)
        line = one_line_error(err)
        assert status == 1 and what in line and str(out) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dir", "a_file"]   # nothing left behind


def test_missing_scale_extra_is_named_before_labelling(model_file, inputs, tmp_path, capsys, monkeypatch,
                                                      no_chunk_runs):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)         # as without the 'scale' extra
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    status, _, err = predict(capsys, "--model", model_file, "--out", tmp_path / "labels.parquet", inputs[0])
    assert status == 1 and "writing Parquet needs pyarrow (pip install 'mdslam[scale]')" in one_line_error(err)
    status, _, err = predict(capsys, "--model", model_file, "--out", tmp_path / "labels.fits", "--engine", "dask",
                             inputs[0])
    assert status == 1 and "engine 'dask' needs dask.distributed" in one_line_error(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_unwritable_output_directory_is_found_before_labelling(model_file, inputs, tmp_path, capsys,
                                                               no_chunk_runs):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        status, _, err = predict(capsys, "--model", model_file, "--out", ro / "labels.fits", inputs[0])
    finally:
        ro.chmod(0o755)
    assert status == 1 and "is not writable" in one_line_error(err)


def test_bad_model_is_found_before_any_chunk_and_gives_no_resume_advice(inputs, tmp_path, capsys,
                                                                         no_chunk_runs):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"not a model")
    out = tmp_path / "labels.fits"
    status, _, err = predict(capsys, "--model", bad, "--out", out, inputs[0])
    line = one_line_error(err)
    assert status == 1 and f"model {bad}: not a SLAM model file" in line and "resume" not in err
    status, _, err = predict(capsys, "--model", tmp_path / "none.npz", "--out", out, inputs[0])
    assert status == 1 and "none.npz: no such file" in one_line_error(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]          # no work directory made


def test_engine_options_are_checked_before_labelling(model_file, inputs, tmp_path, capsys, no_chunk_runs):
    out = tmp_path / "labels.fits"
    for engine in ("dask", "joblib"):
        status, _, err = predict(capsys, "--model", model_file, "--out", out, "--engine", engine,
                                 "--n-workers", "-1", inputs[0])
        assert status == 1 and "n_workers must be a number of processes >= 1" in one_line_error(err)
    status, _, err = predict(capsys, "--model", model_file, "--out", out, "--chunk-size", "0", inputs[0])
    assert status == 1 and "chunk_size must be >= 1" in one_line_error(err)


def test_dead_scheduler_is_one_line_error_within_seconds(model_file, inputs, tmp_path, capsys, no_chunk_runs):
    dask = pytest.importorskip("dask")
    with socket.socket() as s:                                  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        status, _, err = predict(capsys, "--model", model_file, "--out", tmp_path / "labels.fits",
                                 "--scheduler", address, inputs[0])
    line = one_line_error(err)
    assert status == 1 and f"scheduler {address}: no Dask scheduler answered within 2 s" in line
    assert not (tmp_path / "labels.fits.parts").exists()


def test_unreadable_file_alone_in_a_chunk_keeps_its_real_reason(model_file, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    for k in range(3):
        (d / f"spec-{k}.fits").write_bytes(b"SIMPLE  =  this is not FITS")
    out = tmp_path / "labels.fits"
    for fmt in ("lamost", "boss"):
        status, _, err = predict(capsys, "--model", model_file, "--out", out, "--format", fmt,
                                 "--chunk-size", "1", "--overwrite", d)
        assert status == 0
        cat = read(out)
        assert len(cat) == 3 and np.all(cat["flag"] & batch.engines.LabelFlag.FAILED)
        errors = [str(e) for e in cat["error"]]
        assert all(f"spec-{k}.fits" in e for k, e in enumerate(errors))
        assert not any("pixel edges" in e for e in errors + [err])


def test_wrong_format_on_real_lamost_files_names_the_reader_problem(model_file, data_mirror, tmp_path, capsys):
    files = sorted((data_mirror / "lamost_dr7_mdwarfs" / "spectra").glob("spec-*.fits*"))[:2]
    out = tmp_path / "labels.fits"
    status, _, err = predict(capsys, "--model", model_file, "--out", out, "--format", "boss", "--chunk-size", "1",
                             *files)
    cat = read(out)
    assert status == 0 and len(cat) == 2 and np.all(cat["flag"] & batch.engines.LabelFlag.FAILED)
    for f, e in zip(files, cat["error"], strict=True):
        assert f.name in str(e) and "pixel edges" not in str(e)


# --------------------------------------------------------------------------- #
# Ctrl-C and SIGTERM
# --------------------------------------------------------------------------- #
def test_ctrl_c_prints_how_to_resume_and_exits_130(model_file, inputs, reference, tmp_path, capsys, monkeypatch):
    real = batch.engines._label_task
    calls: list[int] = []

    def interrupted(m, t, o):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(t.index)
        return real(m, t, o)

    monkeypatch.setattr(batch.engines, "_label_task", interrupted)
    out = tmp_path / "labels.fits"
    argv = ["--model", model_file, "--out", out, "--chunk-size", CHUNK, "--threads", 1, inputs[0]]
    status, _, err = predict(capsys, *argv)
    assert status == 130 and "Traceback" not in err
    assert "interrupted: 2 of 6 chunks are finished" in err and "--resume" in err
    monkeypatch.setattr(batch.engines, "_label_task", real)
    status, stdout, _ = predict(capsys, *argv, "--resume")
    assert status == 0 and "2 resumed" in stdout
    tb.assert_same_catalogue(reference[1], read(out))


def _descendants(pid: int) -> list:
    psutil = pytest.importorskip("psutil")
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow                 # 23 s on a loaded 2-core machine (worker start-up), bounded by the timeouts
def test_sigterm_stops_the_joblib_workers_too(model_file, tmp_path):
    psutil = pytest.importorskip("psutil")

    flux, ivar, _ = make_spectra(2000, seed=4)
    np.savez(tmp_path / "many.npz", flux=flux, ivar=ivar)
    out = tmp_path / "labels.fits"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-m", "mdslam.cli", "predict", "--model", str(model_file),
                             "--out", str(out), "--engine", "joblib", "--n-workers", "2", "--chunk-size", "10",
                             str(tmp_path / "many.npz")], env=env, stderr=subprocess.PIPE, text=True)
    try:
        workers: list = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(workers) < 2 and proc.poll() is None:
            time.sleep(0.5)
            workers = [p for p in _descendants(proc.pid) if "loky" in " ".join(p.cmdline())]
        assert len(workers) >= 2, "no joblib workers started"
        everything = _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=60)
        _, alive = psutil.wait_procs(everything, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert not alive, f"orphaned worker processes: {[p.pid for p in alive]}"
    assert status == 128 + signal.SIGTERM and "--resume" in err and "Traceback" not in err
    assert not out.exists() and (tmp_path / "labels.fits.parts" / "manifest.json").exists()
    assert not (tmp_path / "labels.fits.parts" / "lock").exists()


# --------------------------------------------------------------------------- #
# catalogues users can open
# --------------------------------------------------------------------------- #
def test_fits_header_carries_units_descriptions_model_checksum_and_version(model_file, reference, capsys):
    res, cat = reference
    h = fits.getheader(res.out, 1)
    cols = {h[f"TTYPE{k}"]: k for k in range(1, h["TFIELDS"] + 1)}
    assert h[f"TUNIT{cols['teff']}"] == "K" and h[f"TUNIT{cols['fe_h']}"] == "dex"
    model = mdslam.slam.SLAM.load(model_file)
    desc = model.set_params(n_jobs=1).predict_table(np.ones((1, tb.N_PIX)))["e_teff"].description
    assert desc and h[f"TCOMM{cols['e_teff']}"] == desc
    assert "read or labelled" in h[f"TCOMM{cols['error']}"]
    assert h["MODELSHA"] == pooch.file_hash(str(model_file), alg="sha256")
    assert h["MDSLAMV"] == mdslam.__version__
    back = batch.read_catalogue(res.out)
    assert back["fe_h"].unit == "dex" and back["e_teff"].description == desc


def test_parquet_catalogue_reads_back_without_pandas(model_file, inputs, reference, tmp_path):
    pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "labels.parquet"
    predict_batch(model_file, FileSource([inputs[0]]), out, chunk_size=CHUNK, threads=1, progress=False)
    code = ("import sys\n"
            "sys.modules['pandas'] = None                 # as if pandas were not installed\n"
            "from mdslam.batch import read_catalogue\n"
            f"t = read_catalogue({str(out)!r})\n"
            "print(len(t), t['teff'].unit, t['fe_h'].unit, t['id'][0], t.meta['LABELS'])\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["231", "K", "dex", "a000", "teff,fe_h"]
    t = batch.read_catalogue(out)
    ref = reference[1]
    assert t.colnames == ref.colnames
    for name in ref.colnames:
        x, y = np.asarray(ref[name]), np.asarray(t[name])
        assert np.array_equal(x, y.astype(x.dtype), equal_nan=x.dtype.kind == "f"), name


def test_every_public_name_of_the_module_is_still_importable():
    from mdslam.batch import (  # noqa: F401
        ENGINES,
        ArraySource,
        BatchResult,
        ChunkData,
        FileSource,
        MockSource,
        expand_inputs,
        file_sha256,
        local_cluster,
        predict_batch,
    )

    assert ENGINES == ("inprocess", "joblib", "dask")
    assert file_sha256(__file__) == pooch.file_hash(__file__, alg="sha256")
