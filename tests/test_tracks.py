"""The tracks' training sets on the real data of the mirror."""

import numpy as np
import pytest

from mdslam import tracks
from mdslam.compendium import chapter


def test_xp_track_is_li2021s_window_with_labels(data_mirror):
    ts = tracks.xp_mdwarfs()
    flow = dict(zip(ts.cut_flow["cut"], ts.cut_flow["n_kept"], strict=True))
    assert flow["gaiaxp_apogee"] == 40226
    assert len(ts) == ts.spectra.n_spec == flow["Li 2021 label cuts"]
    assert ts.spectra.n_pix == 343
    # Li 2021 sec. 3.2: 2800 < Teff < 4500 K, log g > 4; with [Fe/H] and XP SNR > 30: >= 900 stars
    assert len(ts) >= 900
    assert ts.labels["teff"].max() > 4400 and (ts.labels["teff"] < 4500).all() and (ts.labels["logg"] > 4).all()
    assert ts.labels["teff"].min() > 3500  # DR17 gives no [Fe/H] below ~3585 K
    assert np.isfinite(ts.y).all() and (ts.snr > 30).all()
    assert len(np.unique(ts.labels["id"])) == len(ts)  # one row per Gaia source
    m = tracks.xp_all_mdwarfs()
    assert len(m) == 736  # the 736 M dwarfs of the data README (Teff < 4000 K, log g > 4)


def test_xp_teff_logg_set_reaches_the_cool_dwarfs(data_mirror):
    ts = tracks.xp_teff_logg()
    assert ts.label_names == ["teff", "logg"]
    assert ts.labels["teff"].min() < 3200 and (ts.snr > 30).all()
    full = tracks.xp_mdwarfs()
    assert len(ts) > len(full) and np.isin(full.labels["id"], ts.labels["id"]).all()
    assert np.isfinite(ts.y).all() and "fe_h" not in ts.labels.colnames


def test_chapter_training_set_facade_offline(data_mirror):
    a = chapter.training_set("xp", n_max=40, seed=3)
    b = tracks.xp_mdwarfs(n_max=40, seed=3)
    assert list(a.labels["id"]) == list(b.labels["id"])
    lam = chapter.training_set("lamost", n_max=10, seed=1)
    assert len(lam) == 10
    with pytest.raises(ValueError, match="archive"):
        chapter.training_set("boss")
    with pytest.raises(ValueError, match="data_mode"):
        chapter.training_set("xp", data_mode="online")


def test_chapter_training_set_xp_all_is_every_xp_m_dwarf(data_mirror):
    every = chapter.training_set("xp_all")
    assert list(every.labels["id"]) == list(tracks.xp_all_mdwarfs().labels["id"])
    teff = np.asarray(every.labels["teff"], float)
    assert (teff < tracks.MDWARF_TEFF_MAX).all() and (np.asarray(every.labels["logg"], float) > 4).all()
    assert len(np.unique(every.labels["id"])) == len(every)  # one row per Gaia source
    some = chapter.training_set("xp_all", n_max=25, seed=4)
    assert len(some) == 25 and set(some.labels["id"]) <= set(every.labels["id"])


def test_chapter_load_reads_the_registry_offline_and_the_archive_function_otherwise(data_mirror, monkeypatch):
    from mdslam import datasets
    from mdslam.compendium import inputs

    b20 = datasets.load("birky2020_table6_full")
    assert len(chapter.load("b20")) == len(b20)
    some = chapter.load("b20", n_max=30, seed=5)
    assert len(some) == 30 and list(some["APOGEE_ID"]) == list(chapter.subsample(b20, 30, 5)["APOGEE_ID"])
    # any registry name loads in either mode
    assert len(chapter.load("carmenes_cif03", data_mode="archive")) == len(datasets.load("carmenes_cif03"))
    calls = []

    def fake_fetch(name, *, n_max=None, seed=42, **kwargs):
        calls.append((name, n_max, seed, kwargs))
        return b20

    monkeypatch.setattr(inputs, "fetch", fake_fetch)
    assert len(chapter.load("occam_dr16", data_mode="archive", n_max=7, seed=2)) == 7
    assert calls == [("occam_members", 7, 2, {"release": "dr16"})]
    with pytest.raises(ValueError, match="data_mode"):
        chapter.load("b20", data_mode="online")


def test_xp_track_n_max_is_seeded(data_mirror):
    a = tracks.xp_mdwarfs(n_max=50, seed=1)
    b = tracks.xp_mdwarfs(n_max=50, seed=1)
    c = tracks.xp_mdwarfs(n_max=50, seed=2)
    assert len(a) == 50
    assert list(a.labels["id"]) == list(b.labels["id"]) != list(c.labels["id"])


def test_lamost_track_is_normalised_on_the_common_grid(data_mirror):
    ts = tracks.lamost_dr7()
    assert len(ts) == 54
    assert ts.spectra.n_pix == 1596
    w = ts.spectra.wavelength
    assert w[0] == pytest.approx(6147, abs=0.01) and w[-1] == pytest.approx(8888, abs=0.01)
    assert 0.9 < np.nanmedian(ts.spectra.flux[:, (w > 8150) & (w < 8180)]) < 1.1
    assert set(ts.label_names) <= set(ts.labels.colnames)


def test_train_test_split_is_a_seeded_partition():
    tr, te = tracks.train_test_split(1120, test_fraction=250 / 1120, seed=3)
    assert len(te) == 250 and len(tr) == 870
    assert len(np.intersect1d(tr, te)) == 0 and len(np.union1d(tr, te)) == 1120
    tr2, _ = tracks.train_test_split(1120, test_fraction=250 / 1120, seed=3)
    assert (tr == tr2).all()
    with pytest.raises(ValueError):
        tracks.train_test_split(10, test_fraction=1.5)


# --------------------------------------------------------------------------- #
# cached models and CV labels (synthetic training sets: no mirror needed)
# --------------------------------------------------------------------------- #
def _toy_training_set(n=40, n_pix=12, seed=0, track="toy", int_ids=True):
    """Spectra that are smooth functions of (teff, fe_h): SLAM can learn them."""
    from astropy.table import Table

    from mdslam import spectra

    rng = np.random.default_rng(seed)
    teff = rng.uniform(3200, 3900, n)
    feh = rng.uniform(-0.5, 0.3, n)
    wave = np.linspace(6000, 9000, n_pix)
    t = (teff - 3500) / 300
    flux = 1 + 0.1 * np.outer(t, np.sin(wave / 500)) + 0.05 * np.outer(feh, np.cos(wave / 700))
    flux += rng.normal(0, 0.002, flux.shape)
    ivar = np.full(flux.shape, 1 / 0.002**2)
    ids = np.arange(1000, 1000 + n) if int_ids else np.array([f"s{i}" for i in range(n)])
    sp = spectra.Spectra(wave, flux, ivar, np.zeros(flux.shape, bool),
                         Table({"id": ids.astype(str), "snr": np.full(n, 100.0)}))
    labels = Table({"id": ids, "teff": teff, "fe_h": feh, "snr": np.full(n, 100.0)})
    labels["teff"].unit, labels["fe_h"].unit = "K", "dex"
    return tracks.TrainingSet(sp, labels, ["teff", "fe_h"], track, f"toy N={n}")


TOY_GRID = dict(C=(10.0,), epsilon=(0.05,), gamma=(0.3,))


def _count_fits(monkeypatch):
    """Count the calls of SLAM.fit (the work the cache saves)."""
    from mdslam.slam import SLAM

    calls = []
    fit = SLAM.fit

    def counting_fit(self, *a, **k):
        calls.append(1)
        return fit(self, *a, **k)

    monkeypatch.setattr(SLAM, "fit", counting_fit)
    return calls


def _cache_entries(root, func):
    """The joblib.Memory entries (output files) of ``func`` of tracks under ``root``."""
    return sorted((root / "models").rglob(f"*{func}/*/output.pkl"))


def test_cv_labels_are_cached_on_disk_and_reused(tmp_path, monkeypatch):
    from mdslam import datasets
    from mdslam.slam import SLAM

    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path))
    ts = _toy_training_set()
    cvt, model = tracks.cv_labels(ts, grid=TOY_GRID, cv=4, seed=3)
    # one model and one CV table, both under $MDSLAM_CACHE/models
    assert len(_cache_entries(tmp_path, "_fit")) == 1
    assert len(_cache_entries(tmp_path, "_cross_validate")) == 1
    assert list(cvt["id"]) == list(ts.labels["id"])
    # CV labels are out-of-fold: close to the truth but not the in-sample fit
    insample = model.predict(ts.spectra.flux, ts.spectra.ivar)
    assert np.median(np.abs(cvt["teff"] - cvt["teff_true"])) < 60.0
    assert not np.allclose(np.asarray(cvt["teff"]), insample[:, 0])

    # a second call reads the files: neither fitting nor cross-validation runs again
    def boom(*a, **k):
        raise AssertionError("recomputed instead of reading the cache")

    monkeypatch.setattr(SLAM, "fit", boom)
    monkeypatch.setattr(SLAM, "cv_predict", boom)
    again, model2 = tracks.cv_labels(ts, grid=TOY_GRID, cv=4, seed=3)
    np.testing.assert_array_equal(np.asarray(again["teff"]), np.asarray(cvt["teff"]))
    np.testing.assert_array_equal(model2.predict(ts.spectra.flux, ts.spectra.ivar), insample)
    assert again.meta["CV"] == 4 and again.meta["SEED"] == 3 and again.meta["TRACK"] == "toy"


def test_model_cache_key_is_stars_labels_grid_folds_and_seed(tmp_path, monkeypatch):
    from mdslam import datasets

    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path))
    ts = _toy_training_set()
    fits = _count_fits(monkeypatch)
    tracks.slam_model(ts, grid=TOY_GRID, cv=4, seed=0)
    tracks.slam_model(ts, grid={k: list(v) for k, v in TOY_GRID.items()}, cv=4, seed=0)  # same grid
    tracks.slam_model(_toy_training_set(), grid=TOY_GRID, cv=4, seed=0)  # same stars, rebuilt
    assert len(fits) == 1
    tracks.slam_model(ts, grid=TOY_GRID, cv=3, seed=0)
    tracks.slam_model(ts, grid=TOY_GRID, cv=4, seed=1)
    tracks.slam_model(ts, grid=dict(TOY_GRID, C=(1.0,)), cv=4, seed=0)
    tracks.slam_model(ts.subset(np.arange(39)), grid=TOY_GRID, cv=4, seed=0)
    tracks.slam_model(_toy_training_set(int_ids=False), grid=TOY_GRID, cv=4, seed=0)  # string ids, same spectra: same model
    assert len(fits) == 5
    assert len(_cache_entries(tmp_path, "_fit")) == 5


def test_unreadable_cache_entry_is_named_and_recomputed(tmp_path, monkeypatch):
    from mdslam import datasets

    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path))
    ts = _toy_training_set()
    cvt, model = tracks.cv_labels(ts, grid=TOY_GRID, cv=4, seed=3)
    (entry,) = _cache_entries(tmp_path, "_fit")
    entry.write_bytes(b"not a pickle")
    fits = _count_fits(monkeypatch)
    with pytest.warns(RuntimeWarning, match="unreadable cache entry .*_fit") as caught:
        again = tracks.slam_model(ts, grid=TOY_GRID, cv=4, seed=3)
    assert str(entry.parent) in str(caught[0].message)
    assert len(fits) == 1  # retrained once, and the entry is readable again
    np.testing.assert_array_equal(again.predict(ts.spectra.flux, ts.spectra.ivar),
                                  model.predict(ts.spectra.flux, ts.spectra.ivar))
    tracks.slam_model(ts, grid=TOY_GRID, cv=4, seed=3)
    assert len(fits) == 1


def test_cache_false_recomputes_and_writes_nothing(tmp_path, monkeypatch):
    from mdslam import datasets

    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path))
    ts = _toy_training_set()
    fits = _count_fits(monkeypatch)
    tracks.cv_labels(ts, grid=TOY_GRID, cv=4, seed=3, cache=False)
    tracks.slam_model(ts, grid=TOY_GRID, cv=4, seed=3, cache=False)
    assert len(fits) == 2
    assert not (tmp_path / "models").exists()


def test_xp_slam_labels_use_cv_for_training_stars_and_predictions_otherwise(tmp_path, monkeypatch):
    from mdslam import datasets

    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path))
    every = _toy_training_set(n=60, track="xp")
    every.labels["apogee_id"] = [f"2M{i:08d}" for i in range(60)]
    every.labels["fe_h_err"] = np.full(60, 0.01)
    train = every.subset(np.arange(0, 60, 2))  # the even stars are the training set
    monkeypatch.setattr(tracks, "xp_mdwarfs", lambda **kw: every if kw.get("snr_min") == 0 else train)
    lab, model, ts = tracks.xp_slam_labels(grid=TOY_GRID, cv=3, seed=0)
    cvt, _, _ = tracks.xp_cv_labels(grid=TOY_GRID, cv=3, seed=0)
    assert list(lab["id"]) == list(every.labels["id"])  # the order of the XP M dwarf table
    assert list(lab["in_train"]) == [i % 2 == 0 for i in range(60)]
    assert set(lab["label_source"][lab["in_train"]]) == {"cv"}
    assert set(lab["label_source"][~lab["in_train"]]) == {"predicted"}
    np.testing.assert_allclose(np.asarray(lab["teff"][lab["in_train"]]), np.asarray(cvt["teff"]))
    pred = model.predict(every.spectra.flux[1::2], every.spectra.ivar[1::2])
    np.testing.assert_allclose(np.asarray(lab["teff"][~lab["in_train"]]), pred[:, 0], rtol=1e-6)
    np.testing.assert_allclose(lab["teff_apogee"], every.labels["teff"])
    assert list(lab["apogee_id"]) == list(every.labels["apogee_id"])
    # the empirical error law from the CV scatter fills e_<label>_cv for every row
    # (30 CV stars: the law cannot be fitted with >= 20 stars in 2 bins -> NaN, flagged)
    assert np.isnan(np.asarray(lab["e_teff_cv"])).all() and np.asarray(lab["e_cv_extrapolated"]).all()
    assert lab.meta["N_CV"] == 30 and lab.meta["N_PRED"] == 30


@pytest.mark.slow
def test_xp_model_error_laws_do_not_grow_with_snr(data_mirror, tmp_path, monkeypatch):
    """The floor law fitted to the XP model's CV scatter is non-increasing in SNR for every label
    (a free power law gave the [Fe/H] exponent b > 0 on these stars)."""
    from mdslam import datasets, validation

    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path))
    cvt, model, ts = tracks.xp_cv_labels(cv=5, seed=0)
    names = ts.label_names
    pred = np.column_stack([cvt[n] for n in names])
    truth = np.column_stack([cvt[f"{n}_true"] for n in names])
    _, laws = validation.fit_floor_laws(cvt["snr"], pred, truth, names, n_bins=5, min_per_bin=40)
    grid = np.geomspace(*laws["teff"].snr_range, 200)
    for n in names:
        assert laws[n].a >= 0 and laws[n].floor >= 0
        assert np.all(np.diff(laws[n](grid)[0]) <= 1e-12), n
    assert 30 < laws["teff"](50.0)[0] < 200   # K: the CV scatter of the XP M dwarfs is ~80 K


def test_xp_functions_use_the_light_grid_with_a_warning_on_other_stars(tmp_path, monkeypatch):
    """The tuned hyperparameters belong to the catalogue's 393 stars: on other stars (archive mode) the XP
    functions say so and search the light grid (here patched to the toy grid) with the catalogue model's
    prior and likelihood, so the catalogue has the same columns (posterior and maximum-likelihood labels)."""
    from mdslam import datasets
    from mdslam.compendium import tuning

    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(tracks, "BOOK_GRID", TOY_GRID)
    toy = _toy_training_set(n=40, track="xp")
    with pytest.warns(UserWarning, match="tuned hyperparameters belong to other stars"):
        model, _ = tracks.xp_slam_model(ts=toy, cv=3)
    assert {k: tuple(v) for k, v in model.param_grid_.items()} == {k: tuple(v) for k, v in TOY_GRID.items()}
    spec = tuning.TUNED_MODELS["catalogue"]
    assert (model.prior, model.likelihood) == (spec["prior"], spec["likelihood"]) == ("training", "correlated")
    t = model.predict_table(toy.spectra.flux[:3], toy.spectra.ivar[:3])
    assert {f"{n}_ml" for n in toy.label_names} <= set(t.colnames)
    with pytest.raises(ValueError, match="belong to other stars"):
        tracks.slam_model(toy, grid=tracks.TUNED)


@pytest.mark.slow
def test_catalogue_model_is_refitted_at_the_tuned_hyperparameters(data_mirror, tmp_path, monkeypatch):
    """On the catalogue's stars the XP model is the tuned one: its per-pixel choices are the cached
    table's, and its labels equal those of ``tuning.tuned_model`` (no cache) on the same stars."""
    from mdslam import datasets
    from mdslam.compendium import tuning

    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path))
    model, ts = tracks.xp_slam_model()
    hyper = tuning.hyperparameters()
    assert len(ts) == hyper.meta["n_train"] == 393
    for k in ("C", "epsilon", "gamma"):
        assert np.array_equal(getattr(model, k + "_"), np.asarray(hyper[k])), k
    ref = tuning.tuned_model(ts, cv=5)                # the chapters' cv, which fits the correlated likelihood
    assert model.likelihood == ref.likelihood == tuning.CATALOGUE_LIKELIHOOD == "correlated"
    np.testing.assert_allclose(model.predict(ts.spectra.flux[:20], ts.spectra.ivar[:20]),
                               ref.predict(ts.spectra.flux[:20], ts.spectra.ivar[:20]), rtol=1e-8)
    use = np.asarray(hyper["usable"], bool)
    for k, grid in hyper.meta["grid"].items():       # the stored edge fractions, recounted by hand
        on_edge = np.isin(np.asarray(hyper[k])[use], (min(grid), max(grid)))
        assert hyper.meta["grid_edge_fraction"][k] == pytest.approx(on_edge.mean()), k
