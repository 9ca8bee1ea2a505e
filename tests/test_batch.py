"""Tests of streaming, resumable batch prediction (mdslam.batch) and ``mdslam predict`` at scale."""

from __future__ import annotations

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from mdslam import batch, cli
from mdslam.batch import ArraySource, FileSource, MockSource, predict_batch
from mdslam.flags import LabelFlag
from mdslam.slam import SLAM

N_PIX = 24
WAVE = np.linspace(6000.0, 7000.0, N_PIX)
CHUNK = 40


def make_spectra(n, seed=0, snr=100.0):
    """Generated normalised 'spectra': sigmoid line depths in (Teff, [M/H]) plus noise."""
    rng = np.random.default_rng(seed)
    lab = np.column_stack([rng.uniform(3100, 4100, n), rng.uniform(-0.8, 0.4, n)])
    t = (lab[:, 0:1] - 3600) / 500
    m = (lab[:, 1:2] + 0.2) / 0.6
    c = np.random.default_rng(12345).normal(0, 1, (3, N_PIX))
    f0 = 1.0 - 0.5 / (1.0 + np.exp(-(c[0] * t + 0.8 * c[1] * m + 0.3 * c[2] * t * m)))
    return f0 + rng.normal(0, 1 / snr, f0.shape), np.full(f0.shape, snr**2), lab


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    flux, ivar, lab = make_spectra(150, seed=1)
    model = SLAM(C=(10.0,), epsilon=(0.05,), gamma=(0.5,), cv=3, n_jobs=1, random_state=0)
    model.fit(flux, lab, ivar, wavelength=WAVE, label_names=["teff", "fe_h"], label_units=["K", "dex"])
    path = tmp_path_factory.mktemp("model") / "model.npz"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A directory of two npz files (100 + 130 spectra, one of them all-NaN) and a corrupted file."""
    d = tmp_path_factory.mktemp("spectra")
    flux, ivar, lab = make_spectra(230, seed=5)
    flux[7] = np.nan                                       # a NaN spectrum inside a batch
    np.savez(d / "a.npz", flux=flux[:100], ivar=ivar[:100], wavelength=WAVE,
             id=np.array([f"a{i:03d}" for i in range(100)]))
    (d / "b_corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip file")
    np.savez(d / "c.npz", flux=flux[100:], ivar=ivar[100:], wavelength=WAVE,
             id=np.array([f"c{i:03d}" for i in range(130)]))
    return d, lab


@pytest.fixture(scope="module")
def reference(model_file, inputs, tmp_path_factory):
    """The in-process catalogue (model single-threaded, as in each worker)."""
    out = tmp_path_factory.mktemp("ref") / "labels.fits"
    res = predict_batch(model_file, FileSource([inputs[0]]), out, chunk_size=CHUNK, threads=1, progress=False)
    return res, read(out)


def read(path) -> Table:
    """A catalogue as written: str columns, no masks."""
    return Table.read(path, character_as_bytes=False, mask_invalid=False)


def assert_same_catalogue(a: Table, b: Table) -> None:
    assert a.colnames == b.colnames
    for name in a.colnames:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), name
        else:
            assert np.array_equal(x, y), name


# --------------------------------------------------------------------------- #
def test_inprocess_labels_every_spectrum_and_flags_bad_ones(model_file, inputs, reference):
    res, cat = reference
    d, lab = inputs
    assert res.n_spectra == 231 and res.n_chunks == 6 and not res.failed_chunks
    assert len(cat) == 231 and res.n_failed_spectra == 2
    assert not res.work_dir.exists()                      # parts removed once the catalogue is written
    ids = np.asarray(cat["id"])
    assert list(ids[:3]) == ["a000", "a001", "a002"] and ids[100] == "b_corrupt.npz"
    assert list(np.asarray(cat["file"])[[0, 100, 101]]) == ["a.npz", "b_corrupt.npz", "c.npz"]
    # the corrupted file: one row, flagged, the reason recorded; the batch went on
    bad = cat[100]
    assert bad["flag"] & LabelFlag.FAILED and np.isnan(bad["teff"]) and "b_corrupt.npz" in bad["error"]
    # the NaN spectrum: flagged, no labels
    assert cat["flag"][7] & LabelFlag.FAILED and np.isnan(cat["teff"][7])
    good = np.ones(231, bool)
    good[[7, 100]] = False
    assert np.all(cat["flag"][good] & LabelFlag.FAILED == 0) and np.all(np.asarray(cat["error"])[good] == "")
    truth = np.insert(lab, 100, np.nan, axis=0)
    assert np.median(np.abs(cat["teff"][good] - truth[good, 0])) < 30
    assert np.median(np.abs(cat["fe_h"][good] - truth[good, 1])) < 0.03
    # the same numbers as one direct call of the model on every spectrum
    model = SLAM.load(model_file).set_params(n_jobs=1)
    fl = [np.load(d / "a.npz")["flux"], np.load(d / "c.npz")["flux"]]
    direct = model.predict_table(np.vstack(fl), np.full((230, N_PIX), 1e4))
    assert np.allclose(np.asarray(cat["teff"])[good], np.asarray(direct["teff"])[np.delete(np.arange(230), 7)],
                       rtol=1e-9)
    assert cat["teff"].unit == "K" and cat.meta["LABELS"] == "teff,fe_h"


def test_options_dataclass_runs_as_the_keywords_do(model_file, inputs, reference, tmp_path):
    """``options=BatchOptions(...)`` and the same fields as keywords give the same catalogue."""
    out = tmp_path / "opts.fits"
    opts = batch.BatchOptions(chunk_size=CHUNK, threads=1, progress=False)
    res = predict_batch(model_file, FileSource([inputs[0]]), out, options=opts)
    assert res.n_chunks == 6 and res.n_spectra == 231
    assert_same_catalogue(reference[1], read(out))
    with pytest.raises(TypeError, match="not both"):
        predict_batch(model_file, FileSource([inputs[0]]), tmp_path / "x.fits", options=opts, chunk_size=10)
    with pytest.raises(TypeError, match="chunksize"):
        predict_batch(model_file, FileSource([inputs[0]]), tmp_path / "x.fits", chunksize=10)


def test_dask_localcluster_on_loopback_gives_the_same_catalogue(model_file, inputs, reference, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, host="127.0.0.1", protocol="tcp://",
                                  dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        out = tmp_path / "dask.fits"
        res = predict_batch(model_file, FileSource([inputs[0]]), out, chunk_size=CHUNK, engine="dask",
                            scheduler=cluster.scheduler_address, progress=False)
    assert res.n_chunks_labelled == 6 and not res.failed_chunks
    assert_same_catalogue(reference[1], read(out))


def test_joblib_processes_give_the_same_catalogue(model_file, inputs, reference, tmp_path):
    out = tmp_path / "joblib.fits"
    res = predict_batch(model_file, FileSource([inputs[0]]), out, chunk_size=CHUNK, engine="joblib",
                        n_workers=2, progress=False)
    assert res.n_chunks_labelled == 6 and not res.failed_chunks
    assert_same_catalogue(reference[1], read(out))


def test_interrupted_run_resumes_without_redoing_finished_chunks(model_file, inputs, reference, tmp_path,
                                                                 monkeypatch):
    real = batch.engines._label_task
    calls: list[int] = []

    def interrupted(model, task, options):
        if len(calls) == 3:
            raise KeyboardInterrupt                         # Ctrl-C after three chunks
        calls.append(task.index)
        return real(model, task, options)

    monkeypatch.setattr(batch.engines, "_label_task", interrupted)
    out = tmp_path / "labels.fits"
    with pytest.raises(KeyboardInterrupt):
        predict_batch(model_file, FileSource([inputs[0]]), out, chunk_size=CHUNK, threads=1, progress=False)
    work = tmp_path / "labels.fits.parts"
    assert not out.exists()
    assert sorted(p.name for p in work.glob("chunk_*")) == [f"chunk_{i:06d}.fits" for i in range(3)]
    assert json.loads((work / "manifest.json").read_text())["n_chunks"] == 6
    # a plain rerun refuses to throw the finished chunks away
    with pytest.raises(FileExistsError, match="resume"):
        predict_batch(model_file, FileSource([inputs[0]]), out, chunk_size=CHUNK, threads=1, progress=False)
    # another chunk size does not match the parts
    with pytest.raises(ValueError, match="manifest"):
        predict_batch(model_file, FileSource([inputs[0]]), out, chunk_size=CHUNK + 1, threads=1,
                      resume=True, progress=False)

    calls.clear()
    monkeypatch.setattr(batch.engines, "_label_task", lambda m, t, o: (calls.append(t.index), real(m, t, o))[1])
    res = predict_batch(model_file, FileSource([inputs[0]]), out, chunk_size=CHUNK, threads=1, resume=True,
                        progress=False)
    assert calls == [3, 4, 5]                               # only the unfinished chunks
    assert res.n_chunks_skipped == 3 and res.n_chunks_labelled == 3
    assert_same_catalogue(reference[1], read(out))


def test_failed_chunk_is_flagged_and_retried_on_resume(model_file, inputs, reference, tmp_path, monkeypatch):
    real = batch.engines._label_task

    def flaky(model, task, options):
        if task.index == 2:
            return task.index, None, "chunk 2 failed: worker lost"
        return real(model, task, options)

    monkeypatch.setattr(batch.engines, "_label_task", flaky)
    out = tmp_path / "labels.fits"
    res = predict_batch(model_file, FileSource([inputs[0]]), out, chunk_size=CHUNK, threads=1,
                        keep_parts=True, progress=False)
    assert list(res.failed_chunks) == [2]
    cat = read(out)
    assert len(cat) == 231
    rows = slice(2 * CHUNK, 3 * CHUNK)
    assert np.all(cat["flag"][rows] & LabelFlag.FAILED) and np.all(np.isnan(cat["teff"][rows]))
    assert np.all(np.asarray(cat["error"])[rows] == "chunk 2 failed: worker lost")
    assert list(np.asarray(cat["id"])[rows][:2]) == ["a080", "a081"]   # ids kept without reading
    assert_same_catalogue(reference[1][: 2 * CHUNK], cat[: 2 * CHUNK])
    assert (tmp_path / "labels.fits.parts" / "chunk_000002.failed.fits").exists()
    # resume tries the failed chunk again (and only it)
    calls: list[int] = []
    monkeypatch.setattr(batch.engines, "_label_task", lambda m, t, o: (calls.append(t.index), real(m, t, o))[1])
    res = predict_batch(model_file, FileSource([inputs[0]]), out, chunk_size=CHUNK, threads=1, resume=True,
                        overwrite=True, progress=False)
    assert calls == [2] and not res.failed_chunks
    assert_same_catalogue(reference[1], read(out))


def test_parquet_catalogue_streams_one_row_group_per_chunk(model_file, inputs, reference, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "labels.parquet"
    predict_batch(model_file, FileSource([inputs[0]]), out, chunk_size=CHUNK, threads=1, progress=False)
    f = pq.ParquetFile(out)
    assert f.metadata.num_row_groups == 6 and f.metadata.num_rows == 231
    t = f.read()
    ref = reference[1]
    assert t.column_names == ref.colnames
    for name in ref.colnames:
        x = np.asarray(ref[name])
        y = t.column(name).to_numpy(zero_copy_only=False)
        assert np.array_equal(x, y.astype(x.dtype), equal_nan=x.dtype.kind == "f"), name
    assert b"table_meta_yaml" in f.schema_arrow.metadata                # units for astropy's reader
    assert "unit: K" in f.schema_arrow.metadata[b"table_meta_yaml"].decode()


def test_array_source_and_in_memory_model(model_file, tmp_path):
    flux, ivar, lab = make_spectra(50, seed=9)
    model = SLAM.load(model_file).set_params(n_jobs=1)
    out = tmp_path / "labels.fits"
    res = predict_batch(model, ArraySource(flux, ivar), out, chunk_size=16, progress=False)
    cat = read(out)
    assert res.n_chunks == 4 and len(cat) == 50
    assert np.allclose(cat["teff"], model.predict(flux, ivar)[:, 0], rtol=1e-9)


def test_mock_source_streams_spectra_with_truth(data_mirror, tmp_path):
    from mdslam.mock import MockSurvey
    from mdslam.preprocess import log_lambda_grid, preprocess

    ms = MockSurvey("lamost", seed=3, snr_median=200.0, snr_sigma=0.2)
    grid = log_lambda_grid(6147.0, 8888.0, n=120)
    spec, truth = ms.generate(200, start=10_000)
    pp = preprocess(spec, grid=grid, progress=False)
    model = SLAM(C=(10.0,), epsilon=(0.05,), gamma=(0.5,), cv=3, n_jobs=1, random_state=0)
    model.fit(pp.flux, np.column_stack([truth["teff_true"], truth["feh_true"]]), pp.ivar, wavelength=grid,
              label_names=["teff", "fe_h"], label_units=["K", "dex"])
    out = tmp_path / "mock.fits"
    res = predict_batch(model, MockSource(ms, n=100), out, chunk_size=64, progress=False)
    cat = read(out)
    assert res.n_chunks == 2 and len(cat) == 100
    expect = ms.draw_truth(100)
    assert list(cat["id"]) == list(expect["id"])
    assert np.allclose(cat["teff_true"], expect["teff_true"]) and np.allclose(cat["feh_true"], expect["feh_true"])
    ok = cat["flag"] & LabelFlag.FAILED == 0
    assert ok.sum() >= 95
    assert np.median(np.abs(cat["teff"][ok] - cat["teff_true"][ok])) < 80
    with pytest.raises(TypeError, match="MockSource"):
        predict_batch(model, ms, tmp_path / "x.fits")


def test_output_exists_needs_overwrite(model_file, inputs, tmp_path):
    out = tmp_path / "labels.fits"
    fits.PrimaryHDU().writeto(out)
    with pytest.raises(FileExistsError, match="overwrite"):
        predict_batch(model_file, FileSource([inputs[0]]), out, progress=False)


# --------------------------------------------------------------------------- #
def test_cli_predict_directory_chunks_resume_and_parquet(model_file, inputs, reference, tmp_path, capsys):
    out = tmp_path / "cli.fits"
    argv = ["predict", "--model", str(model_file), "--out", str(out), "--chunk-size", str(CHUNK),
            "--threads", "1", str(inputs[0])]
    assert cli.main(argv) == 0
    assert "231 spectra" in capsys.readouterr().out
    assert_same_catalogue(reference[1], read(out))
    assert cli.main(argv) == 1                                      # exists: needs --overwrite
    assert "overwrite" in capsys.readouterr().err
    pq = pytest.importorskip("pyarrow.parquet")
    out_pq = tmp_path / "cli.parquet"
    argv_pq = ["predict", "--model", str(model_file), "--out", str(out_pq), "--chunk-size", "100",
               "--engine", "inprocess", "--resume", str(inputs[0] / "a.npz"), str(inputs[0] / "c.npz")]
    assert cli.main(argv_pq) == 0
    assert pq.ParquetFile(out_pq).metadata.num_rows == 230
