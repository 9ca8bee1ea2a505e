"""Chapter 8's analysis steps (mdslam.compendium.cataloguing) on small tables with known answers."""

from types import SimpleNamespace

import numpy as np
import pytest
from astropy.table import Table
from scipy import stats

from mdslam.compendium import cataloguing
from mdslam.flags import LabelFlag


def test_flag_counts_count_each_value_with_its_meaning():
    bad = int(LabelFlag.LOW_SNR)
    t = cataloguing.flag_counts(np.array([0, bad, 0, bad, bad, 0, 0]), ["teff"])
    assert list(t["flag"]) == [0, bad] and list(t["n"]) == [4, 3]
    assert t["meaning"][0] == "ok" and t["meaning"][1] not in ("", "ok")


def test_parallax_sample_matches_b20_and_photometry_and_drops_flagged_rows():
    cat = Table({"APOGEE_ID": ["2M01", "2M02", "2M03", "2M04"], "SOURCE_ID": np.array([11, 12, 13, 14]),
                 "FLAG": np.array([0, 0, int(LabelFlag.LOW_SNR), 0])})
    b20 = Table({"APOGEE_ID": ["2M01", "2M02", "2M03"], "PLX": [100.0, 10.0, 50.0]})
    phot = Table({"id": np.array([11, 12, 13, 14]), "gaiaedr3_phot_g_mean_mag": [10.0, 12.0, 11.0, 9.0],
                  "gaiaedr3_phot_bp_mean_mag": [11.0, 13.5, 12.0, 10.0],
                  "gaiaedr3_phot_rp_mean_mag": [9.0, 11.0, 10.5, 8.5]})
    hr = cataloguing.parallax_sample(cat, b20, phot, ["teff"])
    assert hr.n_matched == 3                          # 2M04 has no B20 row
    assert list(hr.table["SOURCE_ID"]) == [11, 12]  # 2M03 is flagged
    # M_G = G + 5 log10(plx / mas) - 10: 10 + 10 - 10 = 10; 12 + 5 - 10 = 7
    np.testing.assert_allclose(hr.mg, [10.0, 7.0])
    np.testing.assert_allclose(hr.bp_rp, [2.0, 2.5])


def test_isochrone_offset_interpolates_in_colour_and_is_nan_outside():
    iso = Table({"BP_RP": [3.0, 1.0, 2.0], "G": [11.0, 7.0, 9.0]})     # G = 2 BP_RP + 5, unsorted
    d = cataloguing.isochrone_offset(np.array([8.0, 10.5, 5.0]), np.array([1.5, 2.5, 4.0]), iso)
    np.testing.assert_allclose(d[:2], [0.0, 0.5])   # on the isochrone; 0.5 mag fainter
    assert np.isnan(d[2])
    assert np.isnan(cataloguing.isochrone_offset(np.ones(3), np.ones(3), None)).all()


def test_load_isochrones_says_why_none_are_drawn(monkeypatch):
    from mdslam import isochrones

    def missing(*a, **k):
        raise ImportError("no lachesis-grids")

    monkeypatch.setattr(isochrones, "parsec_isochrone", missing)
    isos, note = cataloguing.load_isochrones([(1.0, 0.0)])
    assert isos == [] and note == "not drawn: no lachesis-grids"


def test_colour_correlations_are_pearson_r_over_finite_stars():
    rng = np.random.default_rng(1)
    bprp = rng.normal(2.5, 0.3, 50)
    mg = 3 * bprp + rng.normal(0, 0.1, 50)
    mg[3] = np.nan
    tab = Table({"TEFF": 4000 - 300 * bprp + rng.normal(0, 20, 50)})
    r, used = cataloguing.colour_correlations(bprp, mg, tab, ["TEFF"])
    assert used.sum() == 49 and not used[3]
    assert r["TEFF"] == pytest.approx(stats.pearsonr(bprp[used], np.asarray(tab["TEFF"])[used])[0])


def test_colour_trend_table_matches_scipy_and_measures_shrinkage():
    rng = np.random.default_rng(7)
    bprp = rng.uniform(1.8, 3.2, 60)
    mg = 5.0 + 2.5 * bprp + rng.normal(0, 0.3, 60)
    truth = 4.3 + 0.13 * bprp + rng.normal(0, 0.08, 60)     # a log g trend of 0.13 dex/mag
    shrunk = truth.mean() + 0.5 * (truth - truth.mean())     # half the spread about the mean
    bprp[0] = np.nan                                          # no colour: left out of every row
    t = cataloguing.colour_trend_table(bprp, mg, {"truth": (truth, None), "shrunk": (shrunk, truth)})
    ok = np.isfinite(bprp)
    assert list(t["n"]) == [59, 59]
    assert t["r BP-RP"][0] == pytest.approx(stats.pearsonr(bprp[ok], truth[ok])[0], rel=1e-10)
    assert t["r M_G"][1] == pytest.approx(stats.pearsonr(mg[ok], shrunk[ok])[0], rel=1e-10)
    assert t["slope per mag BP-RP"][0] == pytest.approx(stats.linregress(bprp[ok], truth[ok]).slope, rel=1e-10)
    # a shrinkage about the mean keeps r and halves every slope
    assert t["r BP-RP"][1] == pytest.approx(t["r BP-RP"][0], rel=1e-10)
    assert t["slope per mag BP-RP"][1] == pytest.approx(0.5 * t["slope per mag BP-RP"][0], rel=1e-10)
    assert t["slope on reference"][1] == pytest.approx(0.5, rel=1e-10)
    assert t["std"][1] == pytest.approx(0.5 * np.std(truth[ok]), rel=1e-10)
    assert np.isnan(t["slope on reference"][0])


def test_cv_skill_uses_unflagged_rows_and_reports_the_all_snr_row():
    rng = np.random.default_rng(2)
    truth = rng.normal(0, 1, 200)
    pred = truth + rng.normal(0, 0.5, 200)
    flag = np.zeros(200, int)
    flag[:20] = int(LabelFlag.LOW_SNR)
    pred[:20] = 50.0                                      # flagged rows must not count
    cvt = Table({"snr": rng.uniform(20, 200, 200), "x": pred, "x_true": truth, "flag": flag})
    flow, table, overall, ok = cataloguing.cv_skill(cvt, ["x"])
    assert ok.sum() == 180 and int(flow["n_kept"][-1]) == 180
    d = pred[20:] - truth[20:]
    expected = 1 - np.mean(d**2) / np.var(truth[20:])
    assert overall["x"]["n"] == 180
    assert overall["x"]["skill"] == pytest.approx(expected, rel=1e-9)


def test_halpha_activity_finds_the_emission_line_star_per_subclass():
    wave = np.linspace(6480.0, 6650.0, 1700)
    flux = np.ones((3, wave.size))
    flux[0] += 2.0 * np.exp(-0.5 * ((wave - 6564.6) / 1.5) ** 2)   # EW = 2 * 1.5 * sqrt(2 pi) = 7.5 A
    ivar = np.full(flux.shape, 1e4)
    meta = Table({"z": [0.0, np.nan, 1e-4], "obsid": [1, 2, 3], "subclass": ["M2", "M2", "M4"]})
    raw = SimpleNamespace(wavelength=wave, flux=flux, ivar=ivar, meta=meta)
    ha, sub = cataloguing.halpha_activity(raw)
    assert list(ha["active"]) == [True, False, False]
    assert ha["ew_halpha"][0] == pytest.approx(2.0 * 1.5 * np.sqrt(2 * np.pi), rel=0.02)
    assert list(sub["subclass"]) == ["M2", "M4"] and list(sub["n"]) == [2, 1] and list(sub["active"]) == [1, 0]


def test_cv_against_spread_by_hand():
    t = Table({"a_true": [1.0, 2.0, 3.0, 4.0], "a": [1.5, 1.5, 3.5, 3.5]})
    row = cataloguing.cv_against_spread(t, ["a"])[0]
    d = np.array([0.5, -0.5, 0.5, -0.5])
    assert row["distinct values"] == 4
    assert row["std of labels"] == pytest.approx(np.std([1, 2, 3, 4]))
    assert row["CV median (SLAM - lit)"] == pytest.approx(0.0)
    assert row["CV std"] == pytest.approx(0.5)
    assert row["CV std / label std"] == pytest.approx(np.std(d) / np.std([1, 2, 3, 4]))


def test_predict_all_draws_n_max_stars_and_marks_the_training_stars():
    class EchoModel:
        def predict_table(self, flux, ivar, snr=None, ids=None):
            return Table({"id": np.asarray(ids), "teff": flux[:, 0]})

    class TS(SimpleNamespace):
        def __len__(self):
            return len(self.labels)

    def make(ids):
        ids = np.asarray(ids)
        return TS(labels=Table({"id": ids}), spectra=SimpleNamespace(flux=ids[:, None].astype(float),
                                                                      ivar=np.ones((ids.size, 1))),
                  snr=np.ones(ids.size), subset=lambda i: make(ids[np.asarray(i)]))

    allx, train = make(np.arange(100, 120)), make(np.arange(100, 120, 4))
    pred, sub, in_train = cataloguing.predict_all(EchoModel(), train, allx)
    assert len(pred) == 20 and list(in_train) == [i % 4 == 0 for i in range(20)]
    np.testing.assert_array_equal(pred["teff"], np.arange(100, 120))
    pred, sub, in_train = cataloguing.predict_all(EchoModel(), train, allx, n_max=8, seed=1)
    assert len(pred) == len(sub) == 8 and list(np.diff(sub.labels["id"]) > 0) == [True] * 7   # table order
    assert list(in_train) == [int(i) % 4 == 0 for i in sub.labels["id"]]


def test_route_counts_by_hand():
    fe_bit = int(LabelFlag.OUTSIDE_DOMAIN) << 2  # [Fe/H] is label 2 of (teff, logg, fe_h)
    cat = Table({"TEFF_MODEL": ["3-label", "2-label", "2-label", "3-label", "3-label"],
                 "FLAG": np.array([0, fe_bit, fe_bit | 1, 32, 0])})
    t = cataloguing.route_counts(cat, ("teff", "logg", "fe_h"))
    assert list(t["Teff, log g from"]) == ["3-label", "2-label"]
    assert list(t["n"]) == [3, 2] and list(t["FE_H flagged"]) == [0, 2] and list(t["unflagged"]) == [2, 0]


@pytest.mark.slow
def test_cool_dwarfs_take_the_two_label_model_on_the_xp_track(data_mirror, tmp_path, monkeypatch):
    """On real XP spectra, the stars APOGEE puts well below the three-label model's Teff domain
    (< 3450 K) are routed to the two-label model, whose Teff tracks APOGEE's there better than
    the three-label model's (which is pulled to its domain edge at ~3585 K)."""
    from mdslam import catalogue, datasets, tracks

    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path))
    grid = dict(C=(10.0,), epsilon=(0.05,), gamma=(0.3,))
    ts3 = tracks.xp_mdwarfs(teff_max=tracks.MDWARF_TEFF_MAX, n_max=150, seed=1)
    ts2 = tracks.xp_teff_logg(n_max=250, seed=1)
    m3 = tracks.slam_model(ts3, grid=grid, cv=2, seed=0, cache=False)
    m2 = tracks.slam_model(ts2, grid=grid, cv=2, seed=0, cache=False)
    allx = tracks.xp_all_mdwarfs()
    apogee = np.asarray(allx.labels["teff"], float)
    test = allx.subset(~np.isin(allx.labels["id"], np.r_[ts3.labels["id"], ts2.labels["id"]])
                       & (allx.snr > 30) & ((apogee < 3450) | ((apogee > 3700) & (apogee < 3900))))
    pred3 = m3.predict_table(test.spectra.flux, test.spectra.ivar, snr=test.snr, ids=test.labels["id"])
    pred2 = m2.predict_table(test.spectra.flux, test.spectra.ivar, snr=test.snr, ids=test.labels["id"])
    cat = catalogue.build_catalogue(pred3, {"SOURCE_ID": (test.labels["id"], "Gaia source_id")},
                                    training_labels="APOGEE DR17")
    out = catalogue.add_teff_logg_model(cat, pred2, m3.domain_array())
    t_ap = np.asarray(test.labels["teff"], float)
    cool, warm = t_ap < 3450, t_ap > 3700
    assert cool.sum() >= 10 and warm.sum() >= 10
    assert np.mean(out["TEFF_MODEL"][cool] == "2-label") >= 0.8
    assert np.mean(out["TEFF_MODEL"][warm] == "3-label") >= 0.8
    err2 = np.nanmedian(np.abs(np.asarray(out["TEFF_2L"])[cool] - t_ap[cool]))
    err3 = np.nanmedian(np.abs(np.asarray(out["TEFF_3L"])[cool] - t_ap[cool]))
    assert err2 < err3


def test_teff_logg_flags_by_hand():
    fe_bit = int(LabelFlag.OUTSIDE_DOMAIN) << 2
    cat = Table({"TEFF_MODEL": ["3-label", "2-label", "3-label", "2-label"],
                 "FLAG": np.array([fe_bit, fe_bit, fe_bit | 16, fe_bit]),
                 "FLAG_2L": np.array([0, 0, 0, 32])})
    assert cataloguing.teff_logg_flags(cat, ("teff", "logg", "fe_h")).tolist() == [0, 0, 16, 32]
