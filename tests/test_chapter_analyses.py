"""Chapters 5-7's analysis steps (mdslam.compendium.clusters, binaries, calibration) on small
tables with answers worked out by hand."""

import numpy as np
import pytest
from astropy.table import Table

from mdslam import relations
from mdslam.compendium import binaries, calibration, clusters
from mdslam.flags import LabelFlag

BAD = int(LabelFlag.LOW_SNR)


# --------------------------------------------------------------------------- #
# chapter 5: clusters
# --------------------------------------------------------------------------- #
def test_hyades_counts_count_both_readings_per_table(monkeypatch):
    from mdslam import selection

    # members: plx 20-25 mas under the distance reading, 0.04-0.05 as printed
    monkeypatch.setattr(selection, "hyades_members", lambda t, distance_reading, **k: (
        (t["plx"] > 20) & (t["plx"] < 25)) if distance_reading else (t["plx"] > 0.04) & (t["plx"] < 0.05))
    a = Table({"plx": [21.0, 22.0, 30.0, 0.045]})
    b = Table({"plx": [1.0, 24.0]})
    t = clusters.hyades_counts({"a": a, "b": b})
    assert list(t["table"]) == ["a", "b"] and list(t["rows"]) == [4, 2]
    assert list(t["printed 0.04 < plx < 0.05 mas"]) == [1, 0]
    assert list(t["read as 0.04-0.05 kpc (20-25 mas)"]) == [2, 1]


def test_cv_skill_uses_unflagged_training_stars_only():
    xl = Table({"in_train": [True, True, True, False, True], "flag": [0, 0, 0, 0, BAD],
                "snr": [40.0, 50.0, 60.0, 70.0, 80.0],
                "fe_h": [0.1, -0.1, 0.3, 5.0, 5.0], "fe_h_apogee": [0.0, -0.2, 0.4, 0.0, 0.0]})
    t = clusters.cv_skill(xl, ["fe_h"], n_bins=1)
    row = t[0]
    # by hand: differences 0.1, 0.1, -0.1 -> MSE 0.01; labels 0, -0.2, 0.4 -> Var 0.0622...
    var = np.var([0.0, -0.2, 0.4])
    assert row["n"] == 3 and row["scatter"] == pytest.approx(0.1)
    assert row["label_std"] == pytest.approx(np.sqrt(var)) and row["skill"] == pytest.approx(1 - 0.01 / var)


def test_cluster_feh_drops_clusters_without_a_value():
    t = Table({"NAME": ["NGC 2682", "Melotte 22", "X"], "FE_H": [0.0, -0.05, np.nan]})
    assert clusters.cluster_feh(t) == {"NGC 2682": 0.0, "Melotte 22": -0.05}


def _stars():
    t = Table({"cluster": ["A", "A", "A", "B", "B"], "fe_h": [0.1, 0.3, 0.2, -0.2, 9.0],
               "FE_H": [0.0, 0.1, 0.0, -0.1, 0.0], "cluster_fe_h": [0.05, 0.05, 0.05, np.nan, np.nan],
               "member": [True, True, False, True, True], "pms": [False, True, False, False, False],
               "ok": [True, True, True, True, False], "n_listed": [1, 2, 1, 1, 1]})
    t.meta["N_ROWS"] = 6
    return t


def test_overlap_summary_by_hand():
    row = clusters.overlap_summary({"dr17": _stars()})[0]
    assert row["OCCAM"] == "DR17" and row["rows x XP"] == 6 and row["stars"] == 5
    assert row["listed twice+"] == 1 and row["unflagged"] == 4 and row["unflagged members"] == 3
    assert row["unflagged PMS"] == 1 and row["unflagged members, not PMS"] == 2


def test_table3_counts_and_lists_values_below_five_stars():
    st = _stars()
    t = clusters.table3(st, np.asarray(st["ok"]), "fe_h", "FE_H", "cluster_fe_h", names=("slam", "occam", "cl"))
    a = t[list(t["Cluster"]).index("A")]
    assert (a["N"], a["N prob. members"], a["N PMS"]) == (3, 2, 1)
    assert a["slam"] == "n=3: +0.10, +0.20, +0.30" and a["cl"] == "+0.05"
    assert t[list(t["Cluster"]).index("B")]["cl"] == "-"          # no cluster [Fe/H]
    d = clusters.table3(st, np.asarray(st["ok"]), "fe_h", "FE_H", members=False)
    assert d.colnames == ["Cluster", "N", "N PMS", "value", "reference", "last"]
    assert d[list(d["Cluster"]).index("B")]["last"] == "n=1: -0.10"   # -0.2 - (-0.1)


def test_table3_leaves_out_sentinels_and_shows_the_printed_l21_row():
    # OCCAM and B20 write -9999.99 / -9999 for a missing [Fe/H]: such a star is not averaged
    st = _stars()
    st["FE_H"][1] = -9999.99
    st["cluster"] = ["Melotte 22"] * 3 + ["B"] * 2
    t = clusters.table3(st, np.asarray(st["ok"]), "fe_h", "FE_H", members=False, paper=True)
    m22 = t[list(t["Cluster"]).index("Melotte 22")]
    assert m22["N"] == 2 and m22["reference"] == "n=2: +0.00, +0.00" and m22["last"] == "n=2: +0.10, +0.20"
    # L21 Table 3 as printed: Melotte 22, 0.00 +- 0.13 (SLAM), 0.00 +- 0.09 (OCCAM), 66 stars
    assert m22["L21 Table 3: <M_H_AP> / [Fe/H]_OCCAM (N)"] == "0.00 ± 0.13 / 0.00 ± 0.09 (N=66)"
    assert t[list(t["Cluster"]).index("B")]["L21 Table 3: <M_H_AP> / [Fe/H]_OCCAM (N)"] == "-"
    assert sum(n for *_, n in clusters.LI2021_TABLE3.values()) == 121 and len(clusters.LI2021_TABLE3) == 16


def test_residuals_by_hand():
    st = _stars()
    res = clusters.residuals({"dr17": st}, {"dr17": {"ok": np.asarray(st["ok"])}})
    np.testing.assert_allclose(res[("dr17", "ok", "star")], [0.1, 0.2, 0.2, -0.1])
    np.testing.assert_allclose(res[("dr17", "ok", "cluster")], [0.05, 0.25, 0.15])   # NaN cluster dropped
    t = clusters.residual_table(res)
    assert list(t["n"]) == [4, 3] and list(t["OCCAM"]) == ["DR17", "DR17"]


# --------------------------------------------------------------------------- #
# chapter 6: binaries
# --------------------------------------------------------------------------- #
def _pairs():
    return Table({"ID_system": [1, 2, 3, 4], "kind": ["M+M", "M+M", "FGK+M", "M+M"],
                  "s01_au": [100.0, 5000.0, 200.0, 50.0], "GaiaDR3_id1": [11, 21, 31, 41],
                  "GaiaDR3_id2": [12, 22, 32, 42], "feh1": [0.1, 0.0, -0.2, np.nan],
                  "feh2": [0.0, 0.2, -0.1, 0.3]})


def test_pair_counts_by_hand():
    t = binaries.pair_counts(_pairs(), 3000.0)
    assert list(t[0]) == ["M+M", 3, 2, 2, 1] and list(t[1]) == ["FGK+M", 1, 1, 1, 1]


def test_literature_pairs_and_b20_companions_differences():
    lit = binaries.literature_pairs(_pairs(), 3000.0, 0.1)
    mm = lit["literature check: CARMENES M+M, literature Fe_H"]
    assert mm.stats.n == 1 and mm.stats.delta == pytest.approx([0.1]) and not mm.has_errors
    b3 = Table({"Mdwarf_FEH": [0.1, -0.3, np.nan], "Companion_FEH": [0.0, -0.1, 0.2]})
    s, n = binaries.b20_companions(b3, 0.1)
    assert n == 2 and s.stats.delta == pytest.approx([0.1, -0.2])       # M - companion


def test_slam_pairs_attach_unflagged_labels_and_b20():
    pairs = _pairs()
    cif = Table({"GaiaDR3_id": [11, 12, 31, 41, 42], "ra": [10.0, 10.1, 20.0, 30.0, 30.1],
                 "dec": [0.0, 0.0, 5.0, 8.0, 8.0]})
    labels = Table({"id": [11, 12, 31, 42], "flag": [0, 0, 0, BAD], "fe_h": [0.05, -0.05, -0.3, 0.0],
                    "e_fe_h_cv": [0.1, 0.1, 0.2, 0.1], "e_cv_extrapolated": [False, False, True, False]})
    b20 = Table({"RA": [10.0, 10.1], "DEC": [0.0, 0.0], "FE_H": [0.2, 0.1]})
    sp = binaries.slam_pairs(pairs, cif, labels, ["fe_h"], b20, 2.0)
    assert list(sp.one["sigma SLAM"]) == [0.2] and list(sp.one["sigma extrapolated"]) == [True]
    assert list(sp.both_xp) == [True, False, False, False]
    assert list(sp.one_xp) == [False, False, True, False]       # 42 is flagged
    assert list(sp.both_b20) == [True, False, False, False]
    assert sp.n_carmenes_in_xp == 4 and sp.n_carmenes_in_b20 == 2
    assert list(sp.one["SLAM [Fe/H] (XP)"]) == [-0.3] and list(sp.one["companion literature Fe_H"]) == [-0.1]
    samples = binaries.slam_pair_samples(sp, 0.1)
    both = samples["SLAM (XP): CARMENES pairs, both components"]
    assert both.has_errors and both.stats.delta == pytest.approx([0.1])
    assert both.stats.normalized == pytest.approx([0.1 / np.hypot(0.1, 0.1)])
    assert samples["SLAM (XP) vs companion literature Fe_H"].stats.delta == pytest.approx([-0.2])
    t = binaries.pair_table(samples)
    assert list(t["n"]) == [1, 1, 1] and t["normalised width (own errors)"][0] == "n < 5"
    assert t["normalised width (own errors)"][1] == "no published errors"


# --------------------------------------------------------------------------- #
# chapter 7: calibration
# --------------------------------------------------------------------------- #
def _eq10_sample(n=400, seed=0):
    """ASPCAP Teff and [M/H], and a reference exactly ASPCAP + the published eq. 10 correction."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(3200, 4100, n)
    y = rng.uniform(-0.6, 0.3, n)
    return t, y, relations.calibrate_aspcap_feh(t, y)


def test_coefficient_table_compares_with_the_published_coefficients():
    coef = np.asarray(relations.ASPCAP_CORRECTION_COEFFS, float) + 0.5
    cov = np.diag(np.full(6, 0.25))
    t = calibration.coefficient_table(coef, cov, "B20")
    np.testing.assert_allclose(t["refit error"], 0.5)
    np.testing.assert_allclose(t["difference / error"], 1.0)
    assert list(t["term"]) == ["x^2", "y^2", "xy", "x", "y", "1"] and "refit (B20)" in t.colnames


def test_correction_and_held_out_recover_a_reference_made_by_eq10():
    t, y, ref = _eq10_sample()
    coef, _ = relations.fit_aspcap_correction(t, y, ref)
    corr = calibration.correction_statistics(t, y, ref, coef, "B20")
    before, pub, fit = corr.values()
    assert before.median == pytest.approx(np.median(ref - y))
    assert pub.std < 1e-12 and fit.std < 1e-6
    held, n_fit = calibration.held_out(t, y, ref, coef, seed=3)
    assert n_fit == 200 and held["ASPCAP + refit on the other half (held out)"].std < 1e-6
    assert held["before (ASPCAP)"].n == 200
    tab = calibration.comparison_table(held, "test half")
    assert list(tab["test half"]) == list(held) and list(tab["n"]) == [200] * 4


def test_metallicity_split_by_hand():
    y = np.array([0.0, 0.1, -0.5, -0.4])
    ref = np.array([0.2, 0.2, -0.1, -0.1])
    t = calibration.metallicity_split(y, ref, -0.25)
    assert list(t["sample"]) == ["all", "[M/H]_APOGEE > -0.25", "[M/H]_APOGEE < -0.25"]
    assert list(t["n"]) == [4, 2, 2]
    np.testing.assert_allclose(t["mean offset"], [0.25, 0.15, 0.35])


def test_residual_panels_draws_three_panels_labelled_with_the_reference():
    t, y, ref = _eq10_sample(200)
    fig = calibration.residual_panels(t, y, ref, np.asarray(relations.ASPCAP_CORRECTION_COEFFS), "SLAM")
    axes = fig.get_axes()
    assert len(axes) == 4                       # three panels and the colour bar
    assert "SLAM" in axes[0].get_ylabel() and "B20" not in axes[0].get_ylabel()


def test_calibration_sample_offline_applies_q25s_cuts(data_mirror):
    from mdslam import datasets

    b20 = datasets.load("birky2020_table6_full")
    cs = calibration.calibration_sample("offline", apogee_snr_min=20.0, feh_min=-0.6, teff_max=4200.0)
    teff = np.asarray(b20["TEFF_APOGEE"], float)
    teff[teff < -9000] = np.nan
    mh = np.asarray(b20["M_H_APOGEE"], float)
    mh[mh < -9000] = np.nan
    expect = ((np.asarray(b20["SNR"], float) > 20) & (np.asarray(b20["FE_H"], float) > -0.6)
              & np.isfinite(teff) & np.isfinite(mh) & (teff < 4200))
    assert cs.ok.sum() == expect.sum() and len(cs.teff) == expect.sum()
    assert cs.ref == "B20" and cs.datasets == ["birky2020_table6_full"]
    assert list(cs.flow["n_kept"])[-1] == expect.sum()
    assert np.all(np.diff(np.asarray(cs.flow["n_kept"])) <= 0)
