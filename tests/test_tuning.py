"""The tuned catalogue model: refit at fixed per-pixel hyperparameters, its cache files, the floor error law,
and the estimator comparison on shared folds."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from mdslam import baselines, validation
from mdslam.compendium import tuning
from mdslam.compendium.tracks import TrainingSet
from mdslam.slam import SLAM
from mdslam.slam.fixed import fit_fixed
from mdslam.spectra import Spectra

GRID = dict(C=(1.0, 10.0, 100.0), epsilon=(0.01, 0.05), gamma=(0.1, 0.5))


def _data(n=60, n_pix=16, seed=3):
    """Smooth sigmoid lines in (teff, fe_h) plus noise: flux, ivar, labels."""
    rng = np.random.default_rng(seed)
    y = np.column_stack([rng.uniform(3200, 3900, n), rng.uniform(-0.6, 0.3, n)])
    z = np.random.default_rng(11).normal(size=(2, n_pix))
    x = (y - [3550, -0.15]) / [350, 0.45]
    f = 1 - 0.3 / (1 + np.exp(-(x @ z)))
    return f + rng.normal(0, 0.01, f.shape), np.full(f.shape, 1e4), y


def _hyper(model):
    cvs = model.chi2_scale_cv_ or {}
    return {"chi2_scale_grid": cvs.get("grid"), "chi2_scale_score": cvs.get("score"),"C": model.C_, "epsilon": model.epsilon_, "gamma": model.gamma_, "usable": model.pixel_usable_,
            "cv_mse_scaled": model.cv_mse_scaled_, "cv_md_scaled": model.cv_md_scaled_,
            "chi2_scale": model.chi2_scale_, "posterior_std_scale": model.posterior_std_scale_,
            "posterior_std_snr_ref": model.posterior_std_snr_ref_}


def test_fit_at_fixed_hyperparameters_reproduces_the_grid_searched_model():
    """Reference: the model fitted with the grid search. At its per-pixel choices, no search, the same labels."""
    flux, ivar, y = _data()
    ref = SLAM(cv=3, random_state=0, prior="training", chi2_scale="cv", **GRID).fit(flux, y, ivar)
    fixed = fit_fixed(SLAM(cv=3, random_state=0, prior="training", chi2_scale="cv", **GRID), flux, y, ivar,
                      _hyper(ref))
    for attr in ("C_", "epsilon_", "gamma_", "cv_mse_", "flux_mean_", "label_scale_"):
        assert np.array_equal(getattr(fixed, attr), getattr(ref, attr)), attr
    assert np.allclose(fixed.dual_coef_, ref.dual_coef_, atol=1e-8)
    assert fixed.grid_edge_fraction_ == pytest.approx(ref.grid_edge_fraction_, nan_ok=True)
    assert fixed.rchi2_threshold_ == pytest.approx(ref.rchi2_threshold_, rel=1e-6)
    a, b = fixed.predict_table(flux[:10], ivar[:10]), ref.predict_table(flux[:10], ivar[:10])
    for c in ("teff", "fe_h", "e_teff", "teff_ml") if "fe_h" in a.colnames else ("label0", "label1", "e_label0"):
        assert np.allclose(a[c], b[c], rtol=1e-6), c


def test_fit_fixed_refuses_hyperparameters_of_another_length():
    flux, ivar, y = _data()
    h = _hyper(SLAM(cv=3, random_state=0, **GRID).fit(flux, y, ivar))
    h["C"] = h["C"][:-1]
    with pytest.raises(ValueError, match="'C' has shape"):
        fit_fixed(SLAM(**GRID), flux, y, ivar, h)


def _training_set(flux, ivar, y):
    lab = Table({"id": np.arange(len(y), dtype=np.int64) + 100, "teff": y[:, 0], "fe_h": y[:, 1],
                 "snr": np.full(len(y), 100.0)})
    lab["teff"].unit, lab["fe_h"].unit = "K", "dex"
    spec = Spectra(np.linspace(4000, 9000, flux.shape[1]), flux, ivar, np.zeros(flux.shape, bool))
    return TrainingSet(spec, lab, ["teff", "fe_h"], "xp", "synthetic")


def test_hyperparameter_file_round_trip_gives_the_same_model(tmp_path):
    """ECSV written by ``hyperparameter_table`` and read back: ``tuned_model`` labels = the searched model's."""
    flux, ivar, y = _data()
    ts = _training_set(flux, ivar, y)
    ref = tuning.tune_hyperparameters(ts, grid=GRID, cv=3)
    sha = tuning.write(tuning.hyperparameter_table(ref, ts), tmp_path / "h.ecsv")
    assert len(sha) == 64 and (tmp_path / "h.ecsv").stat().st_size < 1_000_000
    hyper = tuning.hyperparameters(tmp_path / "h.ecsv")
    assert hyper.meta["grid_edge_fraction"] == pytest.approx(ref.grid_edge_fraction_, nan_ok=True)
    model = tuning.tuned_model(ts, hyper=hyper, prior="training", likelihood="independent")
    assert model.chi2_scale_ == ref.chi2_scale_
    assert np.allclose(model.predict(flux[:8], ivar[:8]), ref.predict(flux[:8], ivar[:8]), rtol=1e-6)
    # the catalogue's default: the correlated-pixel likelihood, fitted at the same per-pixel choices
    cor = tuning.tuned_model(ts, hyper=hyper, cv=3)
    assert cor.likelihood == tuning.CATALOGUE_LIKELIHOOD == "correlated" and cor.noise_factor_ is not None
    assert np.array_equal(cor.C_, ref.C_) and np.array_equal(cor.gamma_, ref.gamma_)
    t = cor.predict_table(flux[:8], ivar[:8])
    assert t.meta["HEADLINE"] == "posterior mean (Li 2021 eq. 2), prior training, correlated-pixel likelihood"
    assert t.meta["LIKELIHD"] == "correlated" and "correlated" in t["teff_ml"].description
    other = _training_set(flux[1:], ivar[1:], y[1:])
    with pytest.raises(ValueError, match="tuned on other stars"):
        tuning.tuned_model(other, hyper=hyper)


def test_pooled_hyperparameters_of_one_model_are_its_own_choices():
    """Pooling the CV-MSE surface of a single model fitted on all stars returns that model's choices."""
    flux, ivar, y = _data()
    ts = _training_set(flux, ivar, y)
    ref = tuning.tune_hyperparameters(ts, grid=GRID, cv=3)
    for models in ([ref], [ref, ref]):
        h = tuning.pooled_hyperparameters(models, ts, inner=3, seed=0)
        for k in ("C", "epsilon", "gamma"):
            assert np.array_equal(h[k], getattr(ref, k + "_")), k
        assert np.allclose(h["cv_mse_scaled"], ref.cv_mse_scaled_, rtol=1e-12)
        assert h.meta["chi2_scale"] == ref.chi2_scale_
        assert h.meta["grid_edge_fraction"] == pytest.approx(ref.grid_edge_fraction_, nan_ok=True)


def test_packaged_cache_files_are_registered_and_small():
    from mdslam import datasets

    for name in (tuning.HYPER_DATASET, tuning.NESTED_DATASET, tuning.FOLDS_DATASET):
        ds = datasets.get(name)
        assert ds.citation and ds.description and ds.manual.startswith("mdslam tune")
        (path,) = datasets.fetch(name)                       # sha256 checked on the way
        assert path.stat().st_size < 1_000_000
    hyper, nested = tuning.hyperparameters(), tuning.nested_table()
    assert len(hyper) == 343 and set(hyper.meta["grid"]) == {"C", "epsilon", "gamma"}
    assert len(nested) == hyper.meta["n_train"] and set(nested["fold"]) == set(range(nested.meta["cv"]))
    folds = tuning.nested_folds()
    assert folds.meta["outer_cv"] == nested.meta["cv"] and len(folds) == 343 * folds.meta["outer_cv"]
    assert folds.meta["training_key"] == nested.meta["training_key"] == hyper.meta["training_key"]
    for k, (_, te) in enumerate(baselines.kfold(len(nested), folds.meta["outer_cv"], folds.meta["seed"])):
        assert set(nested["fold"][te]) == {k}
        assert folds.meta["folds"][k]["chi2_scale"] == nested.meta["chi2_scale_per_fold"][k]


# ----------------------------------------------------------------------------- the floor error law
def test_fit_error_law_recovers_a_known_floor_law_and_flags_extrapolation():
    """Residuals drawn with sigma^2 = 30^2 + (2000/SNR)^2 (K) at five SNR values (one per equal-count bin, so
    a bin's scatter is the law at its SNR): the fit finds a and floor, and never rises with SNR."""
    rng = np.random.default_rng(1)
    snr = np.repeat([15.0, 30.0, 60.0, 120.0, 200.0], 1200)
    sig = np.hypot(30.0, 2000.0 / snr)
    truth = np.column_stack([np.full(snr.size, 3500.0), np.zeros(snr.size)])
    pred = truth + np.column_stack([rng.normal(0, sig), rng.normal(0, 0.1, snr.size)])
    flux, ivar, y = _data()
    model = SLAM(cv=3, random_state=0, C=(10.0,), epsilon=(0.01,), gamma=(0.5,)).fit(flux, y, ivar)
    tab = model.fit_error_law(snr, truth, pred, n_bins=5)
    law = model.error_law_
    assert law["kind"] == "floor"
    assert law["a"][0] == pytest.approx(2000.0, rel=0.1) and law["floor"][0] == pytest.approx(30.0, rel=0.25)
    assert law["floor"][1] == pytest.approx(0.1, rel=0.1) and tab.meta["a_err"][0] > 0
    from mdslam.slam import errorlaw

    grid = np.linspace(law["snr_range"][0], law["snr_range"][1], 50)
    s = errorlaw.error_law_sigma(law, grid, 0)
    assert np.all(np.diff(s) <= 0)
    out = errorlaw.error_law_outside(law, np.array([5.0, 50.0, 500.0]))
    assert out.tolist() == [True, False, True]
    t = model.predict_table(flux[:3], ivar[:3], snr=np.array([5.0, 50.0, 500.0]))
    assert t["e_cv_extrapolated"].tolist() == [True, False, True]
    assert t["e_label0_cv"][1] == pytest.approx(np.hypot(law["floor"][0], law["a"][0] / 50.0))


def test_floor_law_survives_the_model_file_and_power_laws_of_old_files_still_evaluate(tmp_path):
    flux, ivar, y = _data()
    model = SLAM(cv=3, random_state=0, C=(10.0,), epsilon=(0.01,), gamma=(0.5,)).fit(flux, y, ivar)
    rng = np.random.default_rng(2)
    snr = rng.uniform(20, 100, 400)
    model.fit_error_law(snr, np.zeros((400, 2)),
                        rng.normal(0, 1, (400, 2)) * [50, 0.1], n_bins=4)
    model.save(tmp_path / "m.npz")
    back = SLAM.load(tmp_path / "m.npz")
    assert back.error_law_["kind"] == "floor"
    assert np.allclose(back.error_law_["floor"], model.error_law_["floor"])
    from mdslam.slam import errorlaw

    old = {"a": np.array([100.0]), "b": np.array([-0.5]), "cov": np.zeros((1, 2, 2)), "snr_range": (10, 100),
           "n_bins": 3}
    assert errorlaw.error_law_sigma(old, np.array([4.0]), 0)[0] == pytest.approx(50.0)


# ----------------------------------------------------------------------------- estimator comparison
def test_compare_estimators_uses_shared_folds_and_the_baseline_classes():
    """Per-star table: the PCA + ridge column equals ``baselines.cv_predict(PCARidge)`` on the same folds,
    the ML column equals SLAM models fitted on those folds, and the summary's skill is 1 - MSE / Var."""
    flux, ivar, y = _data(n=45)
    folds = baselines.kfold(len(y), 3, 4)
    grid = dict(C=(10.0,), epsilon=(0.01,), gamma=(0.5,), cv=3, n_jobs=1)
    t = validation.compare_estimators(flux, y, ivar, label_names=["teff", "fe_h"], folds=folds, random_state=4,
                                      slam_params=grid, estimators={"ml": {"prior": None}},
                                      baselines={"pca_ridge": baselines.PCARidge(5)}, per_star=True)
    ref = baselines.cv_predict(baselines.PCARidge(5), flux, y, ivar, folds)
    assert np.allclose(t["pca_ridge_teff"], ref[:, 0]) and np.allclose(t["pca_ridge_fe_h"], ref[:, 1])
    ml = np.full_like(y, np.nan)
    for k, (tr, te) in enumerate(folds):
        ml[te] = SLAM(random_state=4, **grid).fit(flux[tr], y[tr], ivar[tr]).predict(flux[te], ivar[te])
        assert set(t["fold"][te]) == {k}
    assert np.allclose(t["ml_teff"], ml[:, 0], rtol=1e-9)
    s = validation.estimator_summary(t, ["teff", "fe_h"])
    assert list(s["estimator"]) == ["ml", "pca_ridge"]
    assert s["spread_teff"][0] == pytest.approx(np.std(y[:, 0]))
    assert s["skill_fe_h"][1] == pytest.approx(1 - np.mean((ref[:, 1] - y[:, 1]) ** 2) / np.var(y[:, 1]))
    assert len(t.meta["grid_edge_fraction_per_fold"]) == 3


def test_mdslam_tune_writes_the_three_files_from_one_nested_run(tmp_path, capsys, monkeypatch):
    """``mdslam tune`` end to end on a small set and grid: the three ECSV files written where asked, their
    sha256 printed; every star labelled by exactly one outer fold; one hyperparameter row per pixel,
    each a grid value; the pooled chi2 scale is the grid value of lowest summed fold score."""
    from mdslam import cli, datasets
    from mdslam.compendium import tracks

    flux, ivar, y = _data(n=40, n_pix=10)
    ts = _training_set(flux, ivar, y)
    monkeypatch.setattr(tracks, "xp_mdwarfs", lambda **kw: ts)
    monkeypatch.setattr(tuning, "TUNING_GRID", dict(C=(1.0, 10.0, 100.0), epsilon=(0.01,), gamma=(0.5,)))
    assert cli.main(["tune", "--out-dir", str(tmp_path), "--outer", "2", "--inner", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    for name, fname in (("xp_nested_cv", "xp_mdwarfs_nested_cv.ecsv"),
                        ("xp_tuned_hyperparameters", "xp_mdwarfs_hyperparameters.ecsv"),
                        ("xp_nested_folds", "xp_mdwarfs_nested_folds.ecsv")):
        assert f"{name}: wrote {fname} (sha256 {datasets.sha256sum(tmp_path / fname)})" in out
    nested = tuning.nested_table(tmp_path / "xp_mdwarfs_nested_cv.ecsv")
    hyper = tuning.hyperparameters(tmp_path / "xp_mdwarfs_hyperparameters.ecsv")
    assert sorted(set(nested["fold"])) == [0, 1] and np.array_equal(nested["id"], ts.labels["id"])
    for _, te in baselines.kfold(40, 2, tuning.SEED):
        assert len(set(nested["fold"][te])) == 1
    assert len(hyper) == 10 and set(hyper["C"]) <= {1.0, 10.0, 100.0}
    score = np.asarray(hyper.meta["chi2_scale_score"])
    assert hyper.meta["chi2_scale"] == hyper.meta["chi2_scale_grid"][int(np.argmin(score))]
    assert tuning.matches(ts, hyper)


# ----------------------------------------------------------------------------- the stored per-fold choices
def test_stored_fold_choices_reproduce_the_nested_labels_without_a_grid_search(tmp_path):
    """Reference 1: the nested CV's own labels, from models fitted with the grid search inside each outer fold.
    Reference 2: a direct ``fit_fixed`` + ``predict`` at one fold's stored choices. ``reevaluate`` reads the
    per-fold file back from ECSV and matches both; a fold that was not stored is refused."""
    flux, ivar, y = _data(n=48, n_pix=12)
    ts = _training_set(flux, ivar, y)
    nested, _, folds = tuning.nested_cv(ts, grid=GRID, outer=3, inner=2)
    tuning.write(folds, tmp_path / "f.ecsv")
    folds = tuning.nested_folds(tmp_path / "f.ecsv")
    assert len(folds) == 3 * 12 and folds.meta["outer_cv"] == 3
    assert [f["chi2_scale"] for f in folds.meta["folds"]] == nested.meta["chi2_scale_per_fold"]
    est = {"ml": {"prior": None}, "post_training_cv": {"prior": "training", "chi2_scale": "cv"}}
    again = tuning.reevaluate(ts, estimators=est, baselines={}, folds=folds)
    assert np.array_equal(again["fold"], nested["fold"]) and np.array_equal(again["id"], nested["id"])
    for c in ("ml_teff", "ml_fe_h", "post_training_cv_teff", "e_post_training_cv_fe_h"):
        assert np.allclose(again[c], nested[c], rtol=1e-6, atol=0), c
    tr, te = baselines.kfold(len(y), 3, tuning.SEED)[1]
    h = folds[folds["outer_fold"] == 1]
    hyper = {k: np.asarray(h[k]) for k in ("C", "epsilon", "gamma", "cv_md_scaled", "usable")}
    hyper["cv_mse_scaled"] = np.where(hyper["usable"], np.asarray(h["cv_mse_scaled"]), np.inf)
    model = fit_fixed(SLAM(**GRID, prior=None), flux[tr], y[tr], ivar[tr], hyper)
    assert np.allclose(model.predict(flux[te], ivar[te]), np.column_stack([again["ml_teff"][te],
                                                                           again["ml_fe_h"][te]]), rtol=1e-9)
    with pytest.raises(ValueError, match="outer fold 3 not stored"):
        tuning.fold_hyperparameters(folds, 3)
    with pytest.raises(ValueError, match="tuned on other stars"):
        tuning.reevaluate(_training_set(flux[1:], ivar[1:], y[1:]), folds=folds)


@pytest.mark.slow
def test_packaged_fold_choices_reproduce_the_packaged_nested_labels(data_mirror):
    """Reference: the packaged nested-CV labels, from the grid searches inside each outer fold. Refitted at
    the packaged per-fold choices (no grid search), every fold's ML and posterior labels are the same to LM's tolerance."""
    from mdslam.compendium import tracks

    ts = tracks.xp_mdwarfs(**tracks.XP_CATALOGUE_WINDOW)
    est = {"ml": {"prior": None}, "post_training_cv": {"prior": "training", "chi2_scale": "cv"}}
    again, nested = tuning.reevaluate(ts, estimators=est, baselines={}), tuning.nested_table()
    assert np.array_equal(again["fold"], nested["fold"]) and again.meta["cv"] == 10
    # The refits see the same stars and hyperparameters, so the labels agree to LM's tolerance, not bit for
    # bit (rounding-level differences in the SVR solves move the optimum by ~1e-6 dex): 1e-4 dex and 0.1 K,
    # below 1/100 of every label's formal error, and far below the CV scatters the table is read for.
    atol = {"teff": 0.1, "logg": 1e-4, "fe_h": 1e-4}
    for key in est:
        for n in ts.label_names:
            assert np.allclose(again[f"{key}_{n}"], nested[f"{key}_{n}"], rtol=0, atol=atol[n]), (key, n)


# ----------------------------------------------------------------------------- grid edges
def test_edge_statistics_of_a_hand_made_surface():
    """Four pixels on a 3 x 3 x 3 surface, answers counted by hand (rtol 1 %): pixel 0 interior; pixel 1 at the
    highest C, 5 % below C's middle value (still improving); pixel 2 at the lowest epsilon, 0.5 % below the
    middle value (flat); pixel 3 at the lowest gamma with its neighbour NaN (not solved: counted improving)."""
    mse = np.full((4, 3, 3, 3), 2.0)
    mse[0, 1, 1, 1] = 1.0
    mse[1, 2, 1, 1], mse[1, 1, 1, 1] = 1.0, 1.05
    mse[2, 1, 0, 1], mse[2, 1, 1, 1] = 1.0, 1.005
    mse[3, 1, 1, 0], mse[3, 1, 1, 1] = 1.0, np.nan
    idx = (np.array([1, 2, 1, 1]), np.array([1, 1, 0, 1]), np.array([1, 1, 1, 0]))
    s = tuning.edge_statistics(mse, idx, np.ones(4, bool), rtol=0.01)
    assert s["C"]["edge"] == s["C"]["improving"] == 0.25 and s["C"]["flat"] == 0.0
    assert s["C"]["high"] == {"n": 1, "n_improving": 1, "median_gain": pytest.approx(0.05),
                              "p90_gain": pytest.approx(0.05)}
    assert s["C"]["low"]["n"] == 0 and np.isnan(s["C"]["low"]["median_gain"])
    assert s["epsilon"]["flat"] == 0.25 and s["epsilon"]["improving"] == 0.0
    assert s["epsilon"]["low"]["median_gain"] == pytest.approx(0.005)
    assert s["gamma"]["improving"] == 0.25 and s["gamma"]["low"]["n_improving"] == 1
    # a pixel left out of ``usable`` is not counted, and the fractions are over the usable pixels
    s = tuning.edge_statistics(mse, idx, np.array([True, False, True, True]), rtol=0.01)
    assert s["C"]["edge"] == 0.0 and s["epsilon"]["flat"] == pytest.approx(1 / 3)
    # a tolerance above the 5 % gain makes pixel 1's edge flat
    assert tuning.edge_statistics(mse, idx, np.ones(4, bool), rtol=0.06)["C"]["flat"] == 0.25


def test_edges_rescored_from_the_stored_folds_match_the_grid_search():
    """Reference 1: the pooled CV-MSE surfaces of the nested CV's grid searches (``pooled_hyperparameters``).
    Re-solving only the edge points and their neighbours from the per-fold file gives the same edge
    statistics, and ``cv_mse_at`` at each fold's chosen points gives that fold's CV-MSE. Reference 2: libsvm
    (scikit-learn's SVR on the same kernel) gives the same CV-MSE to its tolerance."""
    flux, ivar, y = _data(n=48, n_pix=12)
    ts = _training_set(flux, ivar, y)
    grid = dict(C=(1.0, 10.0, 100.0), epsilon=(0.001, 0.01, 0.1), gamma=(0.1, 0.5, 2.0))
    _, hyper, folds = tuning.nested_cv(ts, grid=grid, outer=2, inner=2)
    ref = hyper.meta["edge_gain"]
    got = tuning.edges_from_folds(ts, hyper, folds)
    assert sum(ref[k]["edge"] for k in grid) > 0                       # the test has edges to score
    for k in grid:
        for key in ("edge", "flat", "improving"):
            assert got[k][key] == pytest.approx(ref[k][key]), (k, key)
        for side in ("low", "high"):
            assert got[k][side]["median_gain"] == pytest.approx(ref[k][side]["median_gain"], rel=1e-3, abs=1e-5,
                                                                nan_ok=True), (k, side)
    h = tuning.fold_hyperparameters(folds, 1)
    pix = np.flatnonzero(np.asarray(h["usable"], bool))
    args = [np.asarray(h[k], float)[pix] for k in ("C", "epsilon", "gamma")]
    tr = baselines.kfold(len(ts), 2, tuning.SEED)[1][0]
    fscale2 = np.var(flux[tr], axis=0)[pix]
    admm, info = tuning.cv_mse_at(ts, folds, pix, *args, outer=[1])
    assert info["n_solves"] == 2 * pix.size and info["n_unconverged"] == 0
    assert np.allclose(admm, np.asarray(h["cv_mse_scaled"], float)[pix] * fscale2, rtol=1e-4)
    lib, _ = tuning.cv_mse_at(ts, folds, pix, *args, outer=[1], solver="libsvm")
    assert np.allclose(lib, admm, rtol=0.01)
    with pytest.raises(ValueError, match="solver must be"):
        tuning.cv_mse_at(ts, folds, pix, *args, solver="smo")


def test_edge_beyond_and_the_edges_only_command_against_scikit_learn(tmp_path, capsys, monkeypatch):
    """Reference: scikit-learn's SVR (rbf kernel) fitted by hand on each outer fold's standardised training part
    and its 2 inner KFold splits. ``edge_beyond``'s gain at C = 1000 for pixels whose stored choice is the
    largest C is (CV-MSE at the edge - CV-MSE at 1000) / CV-MSE at the edge, averaged as the folds are;
    ``mdslam tune --edges-only`` writes only the hyperparameter file, with both edge records in its meta."""
    from sklearn.model_selection import KFold
    from sklearn.svm import SVR

    from mdslam import cli, datasets
    from mdslam.compendium import tracks

    flux, ivar, y = _data(n=40, n_pix=6)
    ts = _training_set(flux, ivar, y)
    _, hyper, folds = tuning.nested_cv(ts, grid=dict(C=(0.1, 1.0, 10.0), epsilon=(0.001, 0.01, 0.1),
                                                     gamma=(0.1, 0.5, 2.0)), outer=2, inner=2)
    hyper["C"][:3], hyper["C"][3:] = 10.0, 1.0           # three pixels on the largest-C edge, three inside
    got = tuning.edge_beyond(ts, hyper, folds, values={"C": (1000.0,)}, outer=(0, 1))

    def cv_mse(p, C):
        out = []
        for tr, _ in baselines.kfold(len(y), 2, tuning.SEED):
            Xs = (y[tr] - y[tr].mean(0)) / y[tr].std(0)
            f = flux[tr, p]
            fs = f.std()
            Ys = (f - f.mean()) / fs
            sse = 0.0
            for a, b in KFold(2, shuffle=True, random_state=tuning.SEED).split(Xs):
                m = SVR(C=C, epsilon=hyper["epsilon"][p], gamma=hyper["gamma"][p], tol=1e-3).fit(Xs[a], Ys[a])
                sse += np.sum((m.predict(Xs[b]) - Ys[b]) ** 2)
            out.append(sse / len(tr) * fs**2)
        return np.mean(out)

    gain = [(cv_mse(p, 10.0) - cv_mse(p, 1000.0)) / cv_mse(p, 10.0) for p in range(3)]
    rec = got["C"]["1000"]
    assert rec["n"] == 3 and rec["median_gain"] == pytest.approx(np.median(gain), rel=2e-3)  # both libsvm, tol 1e-3
    assert rec["n_improving"] == int(np.sum(np.asarray(gain) > tuning.EDGE_RTOL))
    assert rec["admm"]["n_solves"] == 3 * 2 * 2 and got["outer"] == [0, 1]

    tuning.write(hyper, tmp_path / "h.ecsv")
    tuning.write(folds, tmp_path / "f.ecsv")
    monkeypatch.setattr(tracks, "xp_mdwarfs", lambda **kw: ts)
    monkeypatch.setattr(tuning, "hyperparameters", lambda path=None: tuning._read(tuning.HYPER_DATASET, tmp_path / "h.ecsv"))
    monkeypatch.setattr(tuning, "nested_folds", lambda path=None: tuning._read(tuning.FOLDS_DATASET, tmp_path / "f.ecsv"))
    monkeypatch.setattr(tuning, "BEYOND_EDGE", {"C": (1000.0,)})
    out_dir = tmp_path / "out"
    assert cli.main(["tune", "--edges-only", "--out-dir", str(out_dir), "--quiet"]) == 0
    assert [p.name for p in out_dir.iterdir()] == ["xp_mdwarfs_hyperparameters.ecsv"]
    assert f"sha256 {datasets.sha256sum(out_dir / 'xp_mdwarfs_hyperparameters.ecsv')}" in capsys.readouterr().out
    back = tuning._read(tuning.HYPER_DATASET, out_dir / "xp_mdwarfs_hyperparameters.ecsv")
    assert back.meta["edge_beyond"]["C"]["1000"]["median_gain"] == pytest.approx(rec["median_gain"])
    assert back.meta["grid_edge_improving_fraction"]["C"] == back.meta["edge_gain"]["C"]["improving"]
    assert back.meta["edge_gain"]["C"]["high"]["n"] == 3 and np.array_equal(back["C"], hyper["C"])
