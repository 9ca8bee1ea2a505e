"""``mdslam train`` and the model on bad input: one-line errors or counted exclusions, fit-quality flags."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from astropy.table import Table

from mdslam import batch, cli, modelfile
from mdslam.flags import LabelFlag, label_flag_meanings
from mdslam.slam import SLAM

N_PIX = 20
WAVE = np.linspace(6150.0, 8850.0, N_PIX)
TINY = ["--C", "10", "--epsilon", "0.05", "--gamma", "0.5", "--cv", "3"]


def _data(n=30, seed=0):
    """Smooth line depths in (teff, logg, fe_h) plus noise at SNR 100: flux (n, N_PIX), ivar, labels."""
    rng = np.random.default_rng(seed)
    lab = np.column_stack([rng.uniform(3100, 3900, n), rng.uniform(4.5, 5.0, n), rng.uniform(-0.6, 0.3, n)])
    z = np.random.default_rng(7).normal(size=(3, N_PIX))
    x = (lab - [3500, 4.75, -0.15]) / [400, 0.25, 0.45]
    f0 = 1.0 - 0.4 / (1.0 + np.exp(-(x @ z)))
    return f0 + rng.normal(0, 0.01, f0.shape), np.full(f0.shape, 1e4), lab


def _files(tmp_path, n=30, edit_labels=None, label_fmt="fits"):
    flux, ivar, lab = _data(n)
    ids = np.array([f"s{i:03d}" for i in range(n)])
    np.savez(tmp_path / "spec.npz", flux=flux, ivar=ivar, wavelength=WAVE, id=ids)
    t = Table({"id": ids, "teff": lab[:, 0], "logg": lab[:, 1], "fe_h": lab[:, 2]})
    if edit_labels is not None:
        t = edit_labels(t)
    path = tmp_path / f"labels.{label_fmt}"
    t.write(path, format="ascii.csv" if label_fmt == "csv" else None, overwrite=True)
    return tmp_path / "spec.npz", path


def _train(tmp_path, capsys, *extra, spectra=None, labels=None, out=None):
    argv = ["train", "--spectra", str(spectra), "--labels", str(labels), "--label-cols", "teff,logg,fe_h",
            "--id-col", "id", "--out", str(out or tmp_path / "m.npz"), *TINY, *extra]
    code = cli.main(argv)
    err = capsys.readouterr().err
    return code, err


# ----------------------------------------------------------------------------- one-line errors of train
def test_missing_output_directory_is_refused_before_training(tmp_path, capsys, monkeypatch):
    spec, lab = _files(tmp_path)
    monkeypatch.setattr(SLAM, "fit", lambda *a, **k: pytest.fail("trained although --out cannot be written"))
    code, err = _train(tmp_path, capsys, spectra=spec, labels=lab, out=tmp_path / "nodir" / "m.npz")
    assert code == 1 and "error: --out" in err and "nodir does not exist" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("option,value,message", [
    ("--C", "abc", "--C: 'abc' is not a number"),
    ("--C", "1,nan", "C: [nan] not allowed"),
    ("--epsilon", "1e6", "epsilon: [1000000.0] not allowed"),
])
def test_bad_hyperparameter_options(tmp_path, capsys, option, value, message):
    spec, lab = _files(tmp_path)
    code, err = _train(tmp_path, capsys, option, value, spectra=spec, labels=lab)
    assert code == 1 and message in err and "Traceback" not in err


def _set(col, rows, value):
    def edit(t):
        t[col] = np.asarray(t[col], float)
        t[col][rows] = value
        return t
    return edit


@pytest.mark.parametrize("edit,message", [
    (_set("teff", slice(None), np.nan), "no row has finite labels"),
    (_set("teff", 4, 1e9), "1 value(s) of 'teff' outside its plausible range 2000..10000 K"),
    (_set("logg", slice(None), 4.8), "label 'logg' is constant"),
])
def test_poison_labels(tmp_path, capsys, edit, message):
    spec, lab = _files(tmp_path, edit_labels=edit)
    code, err = _train(tmp_path, capsys, "--label-units", "K,dex,dex", spectra=spec, labels=lab)
    assert code == 1 and message in err


def test_teff_in_thousands_with_unit_K(tmp_path, capsys):
    def kilo(t):
        t["teff"] = np.asarray(t["teff"]) / 1000.0
        return t
    spec, lab = _files(tmp_path, edit_labels=kilo)
    code, err = _train(tmp_path, capsys, "--label-units", "K,dex,dex", spectra=spec, labels=lab)
    assert code == 1 and "thousands of K" in err and "labels.fits" in err


def test_label_text_with_unit(tmp_path, capsys):
    def text(t):
        t["teff"] = np.array([f"{v:.0f}" for v in t["teff"]], dtype="U8")
        t["teff"][2] = "3300K"
        return t
    spec, lab = _files(tmp_path, edit_labels=text, label_fmt="csv")
    code, err = _train(tmp_path, capsys, spectra=spec, labels=lab)
    assert code == 1 and "labels.csv: column 'teff' has 1 non-numeric value(s), e.g. '3300K'" in err


def test_duplicate_ids_in_the_label_table(tmp_path, capsys):
    def dup(t):
        t["id"][5] = t["id"][6]
        return t
    spec, lab = _files(tmp_path, edit_labels=dup)
    code, err = _train(tmp_path, capsys, spectra=spec, labels=lab)
    assert code == 1 and "column 'id' has 1 duplicated id(s), e.g. 's006'" in err


@pytest.mark.parametrize("n,cv,message", [(5, "10", "cv=10: k-fold cross-validation needs 2 <= cv <= n_train=5"),
                                          (1, "3", "only 1 training star")])
def test_too_few_stars_for_the_folds(tmp_path, capsys, n, cv, message):
    spec, lab = _files(tmp_path, n=n)
    code, err = _train(tmp_path, capsys, "--cv", cv, spectra=spec, labels=lab)
    assert code == 1 and message in err


def test_files_on_different_grids_are_not_stacked(tmp_path, capsys):
    spec, lab = _files(tmp_path)
    with np.load(spec) as z:
        d = dict(z)
    np.savez(tmp_path / "a.npz", **{**d, "flux": d["flux"][:15], "ivar": d["ivar"][:15], "id": d["id"][:15]})
    np.savez(tmp_path / "b.npz", **{**d, "flux": d["flux"][15:], "ivar": d["ivar"][15:], "id": d["id"][15:],
                                     "wavelength": d["wavelength"] + 40.0})
    argv = ["train", "--spectra", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--labels", str(lab),
            "--label-cols", "teff,logg,fe_h", "--id-col", "id", "--out", str(tmp_path / "m.npz"), *TINY]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "b.npz: wavelength grid differs from a.npz's" in err


def test_sentinels_and_empty_spectra_are_excluded_with_counts(tmp_path, capsys):
    spec, lab = _files(tmp_path, edit_labels=_set("fe_h", [3, 7, 11], -9999.0))
    with np.load(spec) as z:
        d = dict(z)
    d["ivar"][[0, 1]] = 0.0
    np.savez(spec, **d)
    code, err = _train(tmp_path, capsys, "--label-units", "K,dex,dex", spectra=spec, labels=lab)
    assert code == 0, err
    assert "3 of 30 row(s) holding a no-value code" in err
    assert "2 of 30 spectra with zero inverse variance everywhere excluded" in err
    m = SLAM.load(tmp_path / "m.npz")
    assert m.n_train_ == 25 and m.training_domain_[2, 0] > -1.0       # not [-9999, ...]


# ----------------------------------------------------------------------------- the estimator itself
def test_fit_refuses_poison_given_as_arrays():
    flux, ivar, lab = _data(30)
    bad = lab.copy()
    bad[0, 0] = 1e9
    with pytest.raises(ValueError, match="'teff' outside its plausible range"):
        SLAM(C=(10.0,), epsilon=(0.05,), gamma=(0.5,), cv=3).fit(flux, bad, ivar, label_names=["teff", "logg", "fe_h"])
    with pytest.raises(ValueError, match="epsilon"):
        SLAM(C=(10.0,), epsilon=(1e6,), gamma=(0.5,), cv=3).fit(flux, lab, ivar)
    with pytest.raises(ValueError, match="only 0 training star"):
        SLAM(C=(10.0,), epsilon=(0.05,), gamma=(0.5,), cv=3).fit(flux, lab, np.zeros_like(ivar))


# ----------------------------------------------------------------------------- model files
@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    flux, ivar, lab = _data(60, seed=1)
    m = SLAM(C=(10.0,), epsilon=(0.02,), gamma=(0.3, 1.0), cv=3)
    m.fit(flux, lab, ivar, wavelength=WAVE, label_names=["teff", "logg", "fe_h"], label_units=["K", "dex", "dex"])
    path = tmp_path_factory.mktemp("model") / "m.npz"
    m.save(path)
    return m, path


def test_thresholds_round_trip_and_older_files_load_without_them(small_model, tmp_path):
    m, path = small_model
    again = SLAM.load(path)
    assert again.rchi2_threshold_ == m.rchi2_threshold_ and again.knn_threshold_ == m.knn_threshold_
    assert np.isfinite(m.rchi2_threshold_) and m.rchi2_threshold_ >= 2.0 and m.knn_k_ == 5
    old = tmp_path / "old.npz"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(old, "w") as zout:
        for item in zin.infolist():
            if item.filename not in ("rchi2_threshold.npy", "knn_threshold.npy", "knn_k.npy"):
                zout.writestr(item, zin.read(item.filename))
    o = SLAM.load(old)
    assert o.rchi2_threshold_ == np.inf and o.knn_threshold_ == np.inf


def test_corrupted_deflate_stream_is_a_model_file_error(small_model, tmp_path):
    _, path = small_model
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("dual_coef.npy")
    # local header: 30 bytes + name + extra; the deflate stream starts after it
    name_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start] = 0x07                       # BFINAL=1, BTYPE=11: an invalid deflate block type
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(modelfile.ModelFileError, match=r"bad.npz: corrupted or truncated model file \(error"):
        SLAM.load(bad)


def test_metadata_without_label_names_is_a_model_file_error(small_model, tmp_path):
    _, path = small_model
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["metadata"][()]))
    del meta["label_names"]
    arrays["metadata"] = np.array(json.dumps(meta))
    bad = tmp_path / "nolabels.npz"
    np.savez(bad, **arrays)
    with pytest.raises(modelfile.ModelFileError, match=r"nolabels.npz: model metadata lacks \['label_names'\]"):
        SLAM.load(bad)


# ----------------------------------------------------------------------------- labelling arrays
def test_unnormalised_flux_is_flagged(small_model):
    m, _ = small_model
    flux, ivar, _ = _data(10, seed=9)
    ok = m.predict_table(flux, ivar)
    big = m.predict_table(flux * 1000.0, ivar / 1e6)
    assert not np.any(np.asarray(ok["flag"]) & (LabelFlag.NOT_NORMALISED | LabelFlag.BAD_FIT))
    assert np.all(np.asarray(big["flag"]) & LabelFlag.NOT_NORMALISED)
    assert np.all(np.asarray(big["flag"]) & LabelFlag.BAD_FIT) and np.all(big["rchi2"] > m.rchi2_threshold_)
    assert "median flux far from the training spectra's level" in " ".join(
        label_flag_meanings(int(big["flag"][0]), m.label_names_))


@pytest.mark.parametrize("wave,problem", [(WAVE + 20000.0, "off by"), (WAVE[::-1], "reversed grid")])
def test_arrays_on_another_grid_are_refused_by_predict(small_model, tmp_path, wave, problem):
    _, path = small_model
    flux, ivar, _ = _data(4, seed=3)
    f = tmp_path / "x.npz"
    np.savez(f, flux=flux, ivar=ivar, wavelength=wave)
    out = tmp_path / "cat.fits"
    batch.predict_batch(path, batch.FileSource([str(f)]), out, progress=False)
    cat = Table.read(out)
    assert np.all(cat["flag"] & LabelFlag.FAILED) and not np.any(np.isfinite(np.ma.filled(cat["teff"], np.nan)))
    assert all("not on the model wavelength grid" in e and problem in e for e in cat["error"])


# ----------------------------------------------------------------------------- completeness on mock stars
@pytest.mark.slow
def test_fit_flags_find_mock_stars_outside_the_training_domain():
    """Train on mock LAMOST M dwarfs with Teff 3000-3700 K and [M/H] -0.6..+0.3 (300 stars, SNR ~100),
    label 100 held-out stars inside and 100 outside (Teff 2600-2900 K, 3740-3830 K, or [M/H] -1.5..-0.8).

    The fit-quality flags (BAD_FIT or FAR_FROM_TRAINING, from the fit alone) flagged 83 of the 100
    outside stars and 5 of the 100 inside when this test was written (every [M/H] < -0.6 and Teff < 2900 K
    star; 37 % of the 3740-3830 K ones, whose spectra are close to the 3700 K edge); the bounds below
    leave room for the noise of 100-star samples.
    """
    from mdslam.mock import MockSurvey
    from mdslam.preprocess import log_lambda_grid, preprocess

    grid = log_lambda_grid(6147.0, 8888.0, n=300)
    ms = MockSurvey("lamost", seed=11, snr_median=100.0, snr_sigma=0.3, labels="uniform",
                    teff_range=(3000.0, 3700.0), feh_range=(-0.6, 0.3))
    spec, truth = ms.generate(400)
    pp = preprocess(spec, grid=grid, progress=False)
    y = np.column_stack([truth["teff_true"], truth["feh_true"]])
    model = SLAM(C=(10.0,), epsilon=(0.05,), gamma=(0.3, 1.0), cv=3, random_state=0)
    model.fit(pp.flux[:300], y[:300], pp.ivar[:300], wavelength=grid, label_names=["teff", "fe_h"],
              label_units=["K", "dex"])
    inside = np.asarray(model.predict_table(pp[300:])["flag"])
    rng = np.random.default_rng(5)
    kind = rng.integers(0, 3, 100)
    teff = np.where(kind == 0, rng.uniform(2600, 2900, 100),
                    np.where(kind == 1, rng.uniform(3740, 3830, 100), rng.uniform(3000, 3700, 100)))
    feh = np.where(kind == 2, rng.uniform(-1.5, -0.8, 100), rng.uniform(-0.6, 0.3, 100))
    out_spec = MockSurvey("lamost", seed=12).spectrum(teff=teff, feh=feh, snr=rng.lognormal(np.log(100), 0.3, 100))
    outside = np.asarray(model.predict_table(preprocess(out_spec, grid=grid, progress=False))["flag"])
    bits = LabelFlag.BAD_FIT | LabelFlag.FAR_FROM_TRAINING
    completeness = np.mean(outside & bits > 0)
    false_positive = np.mean(inside & bits > 0)
    assert completeness >= 0.7, completeness
    assert false_positive <= 0.12, false_positive
    assert np.mean(outside[kind == 2] & bits > 0) >= 0.9        # the [Fe/H] -1.5 case of the report


# ----------------------------------------------------------------------------- --prior / --chi2-scale
@pytest.mark.parametrize("prior,scale", [("training", "3"), ("flat", "cv")])
def test_train_with_a_prior_writes_the_posterior_model(tmp_path, capsys, prior, scale):
    """``--prior`` / ``--chi2-scale`` reach the model file: the loaded model gives the posterior mean,
    equal to a model fitted in Python with the same settings (the reference)."""
    spec, lab = _files(tmp_path)
    code, err = _train(tmp_path, capsys, "--prior", prior, "--chi2-scale", scale, spectra=spec, labels=lab)
    assert code == 0, err
    m = SLAM.load(tmp_path / "m.npz")
    assert m.prior == prior
    flux, ivar, y = _data(30)
    ref = SLAM(C=(10.0,), epsilon=(0.05,), gamma=(0.5,), cv=3, random_state=0, prior=prior,
               chi2_scale="cv" if scale == "cv" else float(scale)).fit(flux, y, ivar)
    assert m.chi2_scale_ == pytest.approx(ref.chi2_scale_)
    if scale != "cv":
        assert m.chi2_scale_ == 3.0
    t = m.predict_table(flux[:5], ivar[:5])
    assert "teff_ml" in t.colnames and t.meta["HEADLINE"].startswith("posterior mean")
    assert np.allclose(t["teff"], ref.predict(flux[:5], ivar[:5])[:, 0], rtol=1e-6)


@pytest.mark.parametrize("value", ["zero", "0", "-2", "inf"])
def test_bad_chi2_scale_is_one_line_error_before_training(tmp_path, capsys, monkeypatch, value):
    spec, lab = _files(tmp_path)
    monkeypatch.setattr(SLAM, "fit", lambda *a, **k: pytest.fail("trained with a bad --chi2-scale"))
    code, err = _train(tmp_path, capsys, "--prior", "training", "--chi2-scale", value, spectra=spec, labels=lab)
    assert code == 1 and "--chi2-scale" in err and len(err.strip().splitlines()) == 1


def test_default_train_is_maximum_likelihood(tmp_path, capsys):
    spec, lab = _files(tmp_path)
    code, err = _train(tmp_path, capsys, spectra=spec, labels=lab)
    assert code == 0, err
    m = SLAM.load(tmp_path / "m.npz")
    flux, ivar, _ = _data(30)
    t = m.predict_table(flux[:3], ivar[:3])
    assert m.prior is None and "teff_ml" not in t.colnames
