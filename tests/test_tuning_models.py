"""The tuned two-label (Teff, log g) and four-label ([alpha/M]) XP models: their packaged hyperparameter files,
the ``grid=TUNED`` lookup by training set, and ``mdslam tune --model``."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from mdslam import datasets
from mdslam.compendium import tracks, tuning
from mdslam.compendium.tracks import TrainingSet
from mdslam.spectra import Spectra

PLAIN = ("teff_logg", "alpha")


def _toy(n=40, n_pix=10, seed=3) -> TrainingSet:
    """Smooth sigmoid lines in (teff, logg) plus noise, as a two-label XP training set."""
    rng = np.random.default_rng(seed)
    y = np.column_stack([rng.uniform(3200, 3900, n), rng.uniform(4.5, 5.1, n)])
    z = np.random.default_rng(11).normal(size=(2, n_pix))
    f = 1 - 0.3 / (1 + np.exp(-(((y - [3550, 4.8]) / [350, 0.3]) @ z)))
    lab = Table({"id": np.arange(n, dtype=np.int64) + 7, "teff": y[:, 0], "logg": y[:, 1], "snr": np.full(n, 80.0)})
    lab["teff"].unit, lab["logg"].unit = "K", "dex"
    spec = Spectra(np.linspace(4000, 9000, n_pix), f + rng.normal(0, 0.01, f.shape), np.full(f.shape, 1e4),
                   np.zeros(f.shape, bool))
    return TrainingSet(spec, lab, ["teff", "logg"], "xp", "synthetic")


@pytest.mark.parametrize("model", PLAIN)
def test_packaged_file_is_registered_and_its_hyperparameters_lie_on_the_tuning_grid(model):
    """The registry's sha256 is checked on the way (``datasets.fetch``); every pixel's (C, epsilon, gamma) is a
    value of the 64-point grid; the stored edge fractions equal a count by hand of the pixels on an edge, and
    every edge pixel is either flat or still improving."""
    name = tuning.TUNED_MODELS[model]["dataset"]
    ds = datasets.get(name)
    assert ds.kind == "generated" and ds.manual.startswith(f"mdslam tune --model {model}")
    (path,) = datasets.fetch(name)
    assert datasets.sha256sum(path) == next(iter(ds.files.values()))
    hyper = tuning.hyperparameters(dataset=name)
    assert len(hyper) == 343
    assert {k: tuple(v) for k, v in hyper.meta["grid"].items()} == tuning.TUNING_GRID
    use = np.asarray(hyper["usable"], bool)
    assert use.mean() > 0.9
    for k, grid in tuning.TUNING_GRID.items():
        assert np.isin(np.asarray(hyper[k], float), grid).all(), k
        on_edge = np.isin(np.asarray(hyper[k], float)[use], (min(grid), max(grid)))
        assert hyper.meta["grid_edge_fraction"][k] == pytest.approx(on_edge.mean()), k
        stats = hyper.meta["edge_gain"][k]
        assert stats["edge"] == pytest.approx(on_edge.mean()) and stats["flat"] + stats["improving"] == \
            pytest.approx(stats["edge"]), k
    assert hyper.meta["cv"] >= 2 and hyper.meta["label_names"] == list(
        ("teff", "logg") if model == "teff_logg" else tracks.XP_ALPHA_LABELS)


def test_tuned_lookup_refuses_a_training_set_that_is_not_the_one_tuned():
    """A toy training set is none of the tuned ones: the named model's lookup says which file refused it, in one
    line; without a name every file is named; ``grid=TUNED`` refuses it too."""
    toy = _toy()
    assert tuning.tuned_for(toy) is None and not tuning.matches(toy)
    for model in PLAIN:
        with pytest.raises(ValueError, match=f"{tuning.TUNED_MODELS[model]['dataset']}: tuned on other stars") as exc:
            tuning.tuned_hyperparameters(toy, model)
        assert "\n" not in str(exc.value) and f"--model {model}" in str(exc.value)
    with pytest.raises(ValueError, match="belong to other stars") as exc:
        tuning.tuned_hyperparameters(toy)
    assert all(spec["dataset"] in str(exc.value) for spec in tuning.TUNED_MODELS.values())
    with pytest.raises(ValueError, match="not a tuned model"):
        tuning.tuned_hyperparameters(toy, "teff_feh")
    with pytest.raises(ValueError, match="grid='tuned'.*belong to other stars"):
        tracks.slam_model(toy, grid=tracks.TUNED)


@pytest.mark.parametrize("model", PLAIN)
def test_the_tuned_stars_find_their_file(model, data_mirror):
    """The stars chapters 3 and 8 train on (``tracks.tuned_training_set``) are the ones each file was tuned on,
    and ``grid=TUNED`` keys the cache by that file with its model's estimator."""
    ts = tracks.tuned_training_set(model)
    assert tuning.tuned_for(ts) == model
    name, hyper = tuning.tuned_hyperparameters(ts)
    assert name == model and hyper.meta["n_train"] == len(ts)
    key = tracks._fit_arguments(ts, tracks.TUNED, 5, 0)["grid"]
    spec = tuning.TUNED_MODELS[model]
    assert key["dataset"] == spec["dataset"] and key["prior"] == spec["prior"] is None
    assert key["likelihood"] == spec["likelihood"] == "independent"


def test_mdslam_tune_model_writes_one_file_from_a_plain_grid_search(tmp_path, capsys, monkeypatch):
    """``mdslam tune --model teff_logg`` end to end on a toy set and a 3-point C grid: one ECSV written where
    asked with its sha256 printed; each pixel's C a grid value; the edge statistics match a count by hand from
    the search's own CV-MSE surface (the relative rise from the edge to the next C); ``--edges-only`` is refused."""
    from mdslam import cli

    toy = _toy()
    monkeypatch.setattr(tracks, "xp_teff_logg", lambda **kw: toy)
    monkeypatch.setattr(tuning, "TUNING_GRID", dict(C=(0.1, 1.0, 10.0), epsilon=(0.01,), gamma=(0.5,)))
    assert cli.main(["tune", "--model", "teff_logg", "--cv", "3", "--out-dir", str(tmp_path), "--quiet"]) == 0
    fname = "xp_teff_logg_hyperparameters.ecsv"
    out = capsys.readouterr().out
    assert f"{tuning.TEFF_LOGG_DATASET}: wrote {fname} (sha256 {datasets.sha256sum(tmp_path / fname)})" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [fname]
    hyper = tuning.hyperparameters(tmp_path / fname)
    assert tuning.matches(toy, hyper) and hyper.meta["cv"] == 3 and hyper.meta["cv_prune"] is None
    assert "3-fold CV grid search on all 40 training stars" in hyper.meta["method"]
    C = np.asarray(hyper["C"], float)
    assert np.isin(C, (0.1, 1.0, 10.0)).all()
    ref = tuning.tune_hyperparameters(toy, grid=dict(C=(0.1, 1.0, 10.0), epsilon=(0.01,), gamma=(0.5,)), cv=3,
                                      prior=None)
    mse = ref.cv_mse_grid_[:, :, 0, 0]                   # (n_pix, 3)
    assert np.array_equal(C, ref.C_)
    low, high = C == 0.1, C == 10.0
    gain = np.where(low, mse[:, 1] / mse[:, 0] - 1, np.where(high, mse[:, 1] / mse[:, 2] - 1, np.nan))
    stats = hyper.meta["edge_gain"]["C"]
    assert stats["edge"] == pytest.approx(np.mean(low | high))
    assert stats["improving"] == pytest.approx(np.mean(gain > tuning.EDGE_RTOL))
    assert stats["low"]["n"] == low.sum() and stats["high"]["n"] == high.sum()
    with pytest.raises(ValueError, match="--edges-only: only for the catalogue model"):
        cli.main(["tune", "--model", "teff_logg", "--edges-only", "--out-dir", str(tmp_path)])


def test_mdslam_tune_grid_options_and_solver_reach_the_search(tmp_path, monkeypatch):
    """``--C``/``--epsilon``/``--gamma`` replace the tuning grid's values and ``--solver`` the SLAM solver of a
    ``--model`` search: the file's grid is the values given, its solver the one asked, and each pixel's C
    equals a search run directly with that grid and solver; the catalogue model refuses them; a
    non-positive value is an argument error."""
    from mdslam import cli

    toy = _toy()
    monkeypatch.setattr(tracks, "xp_mdwarfs", lambda **kw: toy)
    grid = dict(C=(0.3, 30.0), epsilon=(0.02,), gamma=(0.4,))
    assert cli.main(["tune", "--model", "alpha", "--cv", "3", "--out-dir", str(tmp_path), "--quiet",
                     "--C", "0.3,30", "--epsilon", "0.02", "--gamma", "0.4", "--solver", "admm-smo"]) == 0
    hyper = tuning.hyperparameters(tmp_path / "xp_alpha_hyperparameters.ecsv")
    assert hyper.meta["grid"] == {k: list(v) for k, v in grid.items()} and hyper.meta["solver"] == "admm-smo"
    ref = tuning.tune_hyperparameters(toy, grid=grid, cv=3, prior=None, solver="admm-smo")
    assert np.array_equal(np.asarray(hyper["C"], float), ref.C_)
    with pytest.raises(ValueError, match="--C --solver: only for --model"):
        cli.main(["tune", "--C", "1,10", "--solver", "admm-smo", "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        cli.main(["tune", "--model", "alpha", "--gamma", "0,1"])
