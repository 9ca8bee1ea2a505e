"""Validation statistics pinned to hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from mdslam import crossmatch, datasets, selection
from mdslam import validation as val


def test_cv_bias_and_scatter_by_hand():
    # d = [1, 2, 3]: bias = 2; scatter = sqrt((1 + 4 + 9) / 3) = sqrt(14/3) = 2.16025
    assert val.cv_bias([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == pytest.approx(2.0)
    assert val.cv_scatter([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == pytest.approx(2.16025, abs=1e-5)


def test_skill_by_hand():
    # truth [0, 1, 2, 3]: var = 1.25; pred - truth = [0.5, -0.5, 0.5, -0.5]: MSE = 0.25
    # skill = 1 - 0.25 / 1.25 = 0.8; predicting the mean for every star gives 0
    truth = np.array([0.0, 1.0, 2.0, 3.0])
    assert val.skill(truth + [0.5, -0.5, 0.5, -0.5], truth) == pytest.approx(0.8)
    assert val.skill(np.full(4, 1.5), truth) == pytest.approx(0.0)
    assert val.skill(truth[::-1], truth) == pytest.approx(1 - 5.0 / 1.25)  # MSE (9+1+1+9)/4 = 5
    two = val.skill(np.column_stack([truth, np.full(4, 1.5)]), np.column_stack([truth, truth]))
    np.testing.assert_allclose(two, [1.0, 0.0])
    assert np.isnan(val.skill([1.0, 2.0], [3.0, 3.0]))  # labels that do not vary: no skill defined


def test_paired_bootstrap_two_stars_by_enumeration():
    # truth [0, 2], a = [1, 5] (squared errors 1, 9), b = truth (0, 0): per-star MSE difference [1, 9].
    # Resamples of two stars: {0,0} (p 1/4) -> d 1, mixed (p 1/2) -> d 5, {1,1} (p 1/4) -> d 9;
    # the 2.5th / 97.5th percentiles are 1 and 9. Skill difference -d / Var(truth): the mixed
    # resamples have Var 1 (d_skill -5); the others have Var 0 and are dropped.
    t = val.paired_bootstrap([1.0, 5.0], [0.0, 2.0], [0.0, 2.0], ["x"], n_boot=4000)
    r = t[0]
    assert r["n"] == 2
    assert (r["rms_a"], r["rms_b"]) == pytest.approx((np.sqrt(5.0), 0.0))
    assert (r["skill_a"], r["skill_b"]) == pytest.approx((1 - 5.0 / 1.0, 1.0))
    assert (r["d_mse"], r["d_mse_lo"], r["d_mse_hi"]) == pytest.approx((5.0, 1.0, 9.0))
    assert (r["d_skill"], r["d_skill_lo"], r["d_skill_hi"]) == pytest.approx((-5.0, -5.0, -5.0))
    assert r["frac_a_better"] == 0.0


def test_paired_bootstrap_matches_scipy_and_drops_nan():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(3)
    truth = rng.normal(0, 1, (300, 2))
    a = truth + rng.normal(0, 0.5, truth.shape)
    b = truth + rng.normal(0, 0.55, truth.shape)
    a[7, 1] = np.nan                                            # star 7 drops out of label 1 only
    t = val.paired_bootstrap(a, b, truth, ["p", "q"], n_boot=20000)
    assert list(t["n"]) == [300, 299]
    for k in range(2):
        ok = np.isfinite(a[:, k])
        ea, eb = (a[ok, k] - truth[ok, k]) ** 2, (b[ok, k] - truth[ok, k]) ** 2
        ref = bootstrap((ea, eb), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=True,
                        n_resamples=20000, method="percentile", random_state=1).confidence_interval
        half = (ref.high - ref.low) / 2
        assert t["d_mse"][k] == pytest.approx(ea.mean() - eb.mean())
        assert t["d_mse_lo"][k] == pytest.approx(ref.low, abs=0.05 * half)
        assert t["d_mse_hi"][k] == pytest.approx(ref.high, abs=0.05 * half)
        assert t["d_skill"][k] == pytest.approx(val.skill(a[ok, k], truth[ok, k]) - val.skill(b[ok, k], truth[ok, k]))
    same = val.paired_bootstrap(a[:, 0], a[:, 0], truth[:, 0], n_boot=50)
    assert (same["d_mse_lo"][0], same["d_mse_hi"][0], same["d_skill"][0]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        val.paired_bootstrap(a, b[:, 0], truth)


def test_skill_table_all_stars_and_snr_bins_by_hand():
    snr = np.array([10.0, 20.0, 30.0, 110.0, 120.0, 130.0])
    truth = np.array([0.0, 1.0, 2.0, 0.0, 2.0, 4.0])
    pred = truth + np.array([1.0, -1.0, 1.0, 0.0, 0.0, 1.0])
    t = val.skill_table(snr, pred[:, None], truth[:, None], ["x"], snr_edges=[0, 100, np.inf])
    assert list(t["n"]) == [6, 3, 3]
    # low bin: MSE 1, var(0, 1, 2) = 2/3 -> skill -0.5; high bin: MSE 1/3, var(0, 2, 4) = 8/3 -> 0.875
    assert t["skill"][1] == pytest.approx(-0.5) and t["skill"][2] == pytest.approx(0.875)
    assert t["scatter"][1] == pytest.approx(1.0) and t["label_std"][2] == pytest.approx(np.sqrt(8 / 3))
    assert t["bias"][1] == pytest.approx(1 / 3) and t["snr_lo"][2] == 110.0
    # all stars: MSE 4/6, var of [0,1,2,0,2,4] = 35/18 - ... computed by numpy as an independent check
    assert t["skill"][0] == pytest.approx(1 - (4 / 6) / np.var(truth))


def test_fit_floor_law_recovers_known_law_and_stays_non_increasing():
    snr = np.array([35.0, 50.0, 70.0, 100.0, 150.0])
    a, floor = 2000.0, 45.0  # K: sigma = sqrt(45^2 + (2000/SNR)^2)
    law = val.fit_floor_law(snr, np.sqrt(floor**2 + (a / snr) ** 2), n=np.full(5, 60))
    assert law.a == pytest.approx(a, rel=1e-4) and law.floor == pytest.approx(floor, rel=1e-4)
    assert law.snr_range == (35.0, 150.0)
    sig, outside = law(np.array([20.0, 100.0, 300.0]))
    assert list(outside) == [True, False, True]  # outside the fitted SNR range: flagged
    assert sig[1] == pytest.approx(np.sqrt(45**2 + 20**2))
    # scatter that rises with SNR (a free power law would get b > 0): the bounded law stays flat
    rising = val.fit_floor_law(snr, np.array([0.20, 0.21, 0.22, 0.24, 0.25]))
    assert rising.a >= 0 and rising.floor >= 0
    s, _ = rising(np.linspace(35, 150, 50))
    assert np.all(np.diff(s) <= 1e-12)
    b_free = val.fit_power_law(snr, [0.20, 0.21, 0.22, 0.24, 0.25])[1]
    assert b_free > 0
    with pytest.raises(ValueError, match="two bins"):
        val.fit_floor_law([50.0], [0.1])


def test_comparison_quotes_no_scatter_below_five_pairs():
    c = val.compare([1.0, 2.0], [0.5, 0.5])
    assert c.format(".2f") == "median 1.00 (n=2, too few for a scatter)"
    assert "\u00b1" in val.compare(np.arange(5.0), np.zeros(5)).format(".1f")
    assert val.compare([np.nan], [1.0]).format() == "- (n=0)"


def test_fit_power_law_recovers_eq7():
    snr = np.array([2.3, 4.0, 6.0, 9.0, 13.0, 19.2])
    a, b, cov = val.fit_power_law(snr, 388.88 * snr**-0.47)
    assert (a, b) == pytest.approx((388.88, -0.47), rel=1e-6)
    assert cov.shape == (2, 2)


def test_binned_bias_scatter_equal_count_bins():
    snr = np.arange(1.0, 61.0)
    pred = np.zeros(60)
    truth = np.zeros(60)
    pred[:20] = 1.0  # the lowest-SNR third is offset by 1
    t = val.binned_bias_scatter(snr, pred, truth, n_bins=3, min_per_bin=20)
    assert list(t["n"]) == [20, 20, 20]
    np.testing.assert_allclose(t["bias"], [1.0, 0.0, 0.0])
    assert t["snr_median"][0] == pytest.approx(10.5)


def test_robust_std_and_compare_by_hand():
    d = np.array([1.0, 2.0, 3.0, 10.0, np.nan])
    # |d - 2.5| = 1.5, 0.5, 0.5, 7.5 -> median 1.0 -> 1.4826
    assert val.robust_std(d) == pytest.approx(1.4826)
    c = val.compare(d, np.zeros(5))
    # median 2.5; mean 4; std: deviations -3, -2, -1, 6 -> (9 + 4 + 1 + 36) / 4 = 12.5 -> 3.53553
    assert (c.median, c.mean, c.n) == (2.5, 4.0, 4)
    assert c.std == pytest.approx(3.535534, abs=1e-6)
    assert c.robust_std == pytest.approx(1.4826)
    assert c.format(".1f", "K", min_n=1) == "2.5 \u00b1 3.5 K (n=4)"
    assert c.format(".1f", "K") == "median 2.5 K (n=4, too few for a scatter)"
    assert c.as_dict()["n"] == 4
    empty = val.compare([np.nan], [0.0])
    assert empty.n == 0 and np.isnan(empty.median)


def test_binned_medians_by_hand():
    x = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
    dy = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 30.0])
    t = val.binned_medians(x, dy, bins=[0.0, 2.0, 4.0])
    assert list(t["n"]) == [4, 4]
    # bin 0: median 2.5, std sqrt((2.25 + 0.25 + 0.25 + 2.25)/4) = sqrt(1.25) = 1.11803
    # bin 1: median 10, mean 15, std sqrt((25*3 + 225)/4) = sqrt(75) = 8.66025, MAD 0
    np.testing.assert_allclose(t["median"], [2.5, 10.0])
    np.testing.assert_allclose(t["mean"], [2.5, 15.0])
    np.testing.assert_allclose(t["std"], [1.118034, 8.660254], atol=1e-6)
    np.testing.assert_allclose(t["robust_std"], [1.4826 * 1.0, 0.0])
    # standard error of the median: 1.2533 * 8.660254 / sqrt(4) = 5.42695
    assert t["median_err"][1] == pytest.approx(5.42695, abs=1e-5)
    np.testing.assert_allclose(t["x_center"], [1.0, 3.0])
    sparse = val.binned_medians(x, dy, bins=[0.0, 2.0, 4.0], min_count=5)
    assert np.isnan(sparse["median"]).all() and list(sparse["n"]) == [4, 4]


def test_fit_gaussian_recovers_width():
    rng = np.random.default_rng(3)
    mu, sigma, cov = val.fit_gaussian(rng.normal(1.0, 2.0, 20000))
    assert mu == pytest.approx(1.0, abs=0.06)
    assert sigma == pytest.approx(2.0, abs=0.06)
    assert cov.shape == (2, 2)
    with pytest.raises(ValueError, match="at least 3"):
        val.fit_gaussian([1.0, 2.0])


def test_pair_statistics_by_hand():
    p = val.pair_statistics([0.1, 0.0, -0.2], [0.1] * 3, [0.0, 0.0, 0.0], [0.1] * 3)
    # delta = [0.1, 0, -0.2]; sqrt(0.1^2 + 0.1^2) = 0.141421 -> normalised [0.70711, 0, -1.41421]
    np.testing.assert_allclose(p.delta, [0.1, 0.0, -0.2])
    np.testing.assert_allclose(p.normalized, [0.707107, 0.0, -1.414214], atol=1e-6)
    # mean -0.033333, median 0, std sqrt((0.133333^2 + 0.033333^2 + 0.166667^2)/3) = 0.124722
    assert (p.n, p.median, p.n_outside_3sigma) == (3, 0.0, 0)
    assert p.mean == pytest.approx(-0.033333, abs=1e-6)
    assert p.std == pytest.approx(0.124722, abs=1e-6)


def test_pair_statistics_finds_overestimated_errors():
    # quoted errors 0.1 dex per star, true scatter 0.8 x that: the L21 sec. 5.2 situation
    rng = np.random.default_rng(7)
    n = 5000
    err = np.full(n, 0.1)
    x1 = rng.normal(0, 0.08, n)
    x2 = rng.normal(0, 0.08, n)
    x1[:10] += 1.0  # ten non-physical pairs, > 3 sigma apart
    p = val.pair_statistics(x1, err, x2, err)
    assert p.sigma_fit == pytest.approx(0.8, abs=0.04)
    assert p.norm_robust_std == pytest.approx(0.8, abs=0.04)
    assert p.n_outside_3sigma >= 10


def test_cluster_statistics_by_hand():
    t = val.cluster_statistics(["A", "A", "B", " A"], [0.0, 0.2, -0.1, 0.1], [0.1, 0.1, 0.0, 0.1])
    assert list(t["cluster"]) == ["A", "B"]
    assert list(t["n"]) == [3, 1]
    # A: mean(0, 0.2, 0.1) = 0.1, std sqrt((0.01 + 0.01 + 0)/3) = 0.081650; lit 0.1 +- 0
    assert t["mean"][0] == pytest.approx(0.1)
    assert t["std"][0] == pytest.approx(0.081650, abs=1e-6)
    assert (t["mean_lit"][0], t["std_lit"][0]) == pytest.approx((0.1, 0.0))
    # differences -0.1, 0.1, 0: mean 0, std 0.081650
    assert t["mean_diff"][0] == pytest.approx(0.0, abs=1e-12)
    assert t["std_diff"][0] == pytest.approx(0.081650, abs=1e-6)
    # a single star has no standard deviation (L21 Table 3 prints none)
    assert t["mean"][1] == pytest.approx(-0.1) and np.isnan(t["std"][1])
    assert len(val.cluster_statistics(["A", "A", "B"], [0, 0, 0], [0, 0, 0], min_n=2)) == 1


def test_cluster_table_for_b20_members_of_occam_dr16(data_mirror):
    # L21 Table 3 layout on real catalogues: B20 Cannon [Fe/H] against the OCCAM (ASPCAP) [Fe/H]
    # of the same stars, for B20 x OCCAM DR16 members (RV, PM > 0.01, CG_PROB > 0.5: 174 stars,
    # 68 of them with an OCCAM [Fe/H])
    j = crossmatch.match_apogee_id(datasets.load("birky2020_table6_full"), datasets.load("occam_member_dr16"))
    j = j[selection.occam_members(j, feh_min=None, cg_min=0.5)]
    t = val.cluster_statistics(j["CLUSTER"], selection.column(j, "FE_H_1"), selection.column(j, "FE_H_2"))
    assert list(t["cluster"]) == ["Collinder 69", "IC 348", "L 1641S", "Melotte 20", "Melotte 22"]
    assert list(t["n"]) == [12, 1, 13, 2, 40]
    pleiades = t[t["cluster"] == "Melotte 22"][0]
    assert pleiades["mean"] == pytest.approx(0.0455, abs=1e-4)
    assert pleiades["mean_lit"] == pytest.approx(-0.00925, abs=1e-6)
    assert pleiades["mean_diff"] == pytest.approx(0.0548, abs=1e-4)
    # overall, B20 is more metal-rich than ASPCAP for these members: 0.113 +- 0.151 dex
    c = val.compare(selection.column(j, "FE_H_1"), selection.column(j, "FE_H_2"))
    assert c.n == 68
    assert (c.median, c.std) == pytest.approx((0.113, 0.151), abs=1e-3)


def test_cluster_statistics_against_a_cluster_table_by_hand():
    # OCCAM member files say "Melotte 22", the cluster table "Melotte_22": both name one cluster
    t = val.cluster_statistics(["Melotte 22", "Melotte 22", "NGC 2682"], [0.1, -0.1, -0.2], [0.0, 0.0, 0.0],
                               cluster_values={"Melotte_22": 0.05, "Other_1": 1.0})
    assert list(t["cluster"]) == ["Melotte 22", "NGC 2682"]
    # Melotte 22: mean(0.1, -0.1) = 0 -> 0 - 0.05 = -0.05; NGC 2682 not in the table -> NaN
    assert t["cluster_lit"][0] == pytest.approx(0.05) and np.isnan(t["cluster_lit"][1])
    assert t["mean_minus_cluster"][0] == pytest.approx(-0.05)
    assert np.isnan(t["mean_minus_cluster"][1])
    assert "cluster_lit" not in val.cluster_statistics(["A"], [0.0], [0.0]).colnames


def test_flag_cuts_reads_the_per_label_domain_bits():
    from mdslam.flags import LabelFlag

    dom = int(LabelFlag.OUTSIDE_DOMAIN)
    flag = np.array([0, dom, dom << 2, int(LabelFlag.NOT_CONVERGED), dom << 1, int(LabelFlag.BAD_FIT),
                     int(LabelFlag.FAR_FROM_TRAINING) | int(LabelFlag.LOW_SNR)])
    cuts = val.flag_cuts(flag, ["teff", "logg", "fe_h"], labels=["teff", "fe_h"])
    assert list(cuts) == ["fit ok (no failure, converged, SNR, pixels)", "teff inside the training domain",
                          "fe_h inside the training domain", "spectrum described by the model (rchi2)",
                          "labels near the training set (k-NN)"]
    assert list(cuts["fit ok (no failure, converged, SNR, pixels)"]) == [True] * 3 + [False, True, True, False]
    assert list(cuts["teff inside the training domain"]) == [True, False, True, True, True, True, True]
    assert list(cuts["fe_h inside the training domain"]) == [True, True, False, True, True, True, True]
    assert list(cuts["spectrum described by the model (rchi2)"]) == [True] * 5 + [False, True]
    assert list(cuts["labels near the training set (k-NN)"]) == [True] * 6 + [False]


# --------------------------------------------------------------------------- #
# Q25 Fig. 12: the sign of eq. 11 on FGK+FGK pairs
# --------------------------------------------------------------------------- #
def _niu_by_hand(t):
    """Q25 eq. 11 written out again with math.pow (independent of mdslam.relations)."""
    import math

    r = t / 5281.4
    return 0.358 * math.pow(r, -2.404 if t >= 5281.4 else 1.254) - 0.4


def test_niu2023_pair_differences_by_hand():
    # both stars [Fe/H] = 0, each measured with the bias Delta(Teff):
    # Delta(6000) = 0.358 * (6000/5281.4)^-2.404 - 0.4 = -0.136551
    # Delta(4500) = 0.358 * (4500/5281.4)^1.254 - 0.4 = -0.107124
    d6000, d4500 = _niu_by_hand(6000.0), _niu_by_hand(4500.0)
    assert d6000 == pytest.approx(-0.136551, abs=2e-6) and d4500 == pytest.approx(-0.107124, abs=2e-6)
    teff1, teff2 = np.array([6000.0, 6000.0]), np.array([4500.0, 3800.0])  # 3800 K: outside eq. 11's range
    feh1, feh2 = np.array([d6000, d6000]), np.array([d4500, 0.0])
    out = val.niu2023_pair_differences(teff1, feh1, teff2, feh2)
    assert list(out) == list(val.NIU2023_CONVENTIONS)
    assert out["uncorrected"][0] == pytest.approx(d6000 - d4500)            # -0.029427
    assert out["feh - Delta (adopted)"][0] == pytest.approx(0.0, abs=1e-12)  # the bias removed
    assert out["feh + Delta"][0] == pytest.approx(2 * (d6000 - d4500))      # the bias doubled
    assert all(np.isnan(v[1]) for v in out.values())


def test_niu2023_sign_test_finds_the_flat_convention():
    # 40 pairs sharing [Fe/H] = 0.1, primaries 5000-6900 K, secondaries 900 K cooler,
    # both measured with the bias Delta(Teff): removing Delta leaves exactly 0 at every Teff
    teff1 = np.linspace(5000.0, 6900.0, 40)
    teff2 = teff1 - 900.0
    feh1 = 0.1 + np.array([_niu_by_hand(t) for t in teff1])
    feh2 = 0.1 + np.array([_niu_by_hand(t) for t in teff2])
    res = val.niu2023_sign_test(teff1, feh1, teff2, feh2)
    row = {r["convention"]: r for r in res}
    adopted, raw, added = row["feh - Delta (adopted)"], row["uncorrected"], row["feh + Delta"]
    assert adopted["n"] == raw["n"] == 40
    assert abs(adopted["slope"]) < 1e-10 and abs(adopted["median"]) < 1e-12 and adopted["binned_spread"] < 1e-12
    raw_d = feh1 - feh2
    assert raw["median"] == pytest.approx(np.median(raw_d))
    assert abs(raw["slope"]) > 0.01 and raw["binned_spread"] > 0.005
    # adding Delta doubles every difference: twice the slope, twice the median
    assert added["slope"] == pytest.approx(2 * raw["slope"]) and added["median"] == pytest.approx(2 * raw["median"])


def test_compare_groups_same_stars_by_hand():
    slam = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0, np.nan])
    apogee = np.array([0.0, 10.0, 10.0, 10.0, 50.0, 100.0, 0.0])
    ref = np.zeros(7)
    groups = {"all": np.ones(7, bool), "first two": np.arange(7) < 2}
    t = val.compare_groups(groups, {"SLAM - ref": (slam, ref), "APOGEE - ref": (apogee, ref)})
    # star 6 has no SLAM label: it leaves both differences, so n = 6 and the APOGEE row uses the same six
    assert list(t["n"]) == [6, 2]
    # SLAM - ref: 10..60, median 35, std sqrt(mean of 25^2, 15^2, 5^2 ...) = sqrt(291.667) = 17.0783
    assert t["SLAM - ref median"][0] == pytest.approx(35.0)
    assert t["SLAM - ref std"][0] == pytest.approx(17.078251, abs=1e-6)
    # |d - 35| = 25, 15, 5, 5, 15, 25 -> MAD 15 -> 1.4826 * 15
    assert t["SLAM - ref robust std"][0] == pytest.approx(22.239)
    # APOGEE - ref: 0, 10, 10, 10, 50, 100 -> median 10; |d - 10| = 10, 0, 0, 0, 40, 90 -> MAD 5
    assert t["APOGEE - ref median"][0] == pytest.approx(10.0)
    assert t["APOGEE - ref robust std"][0] == pytest.approx(1.4826 * 5.0)
    # two stars: the median stays, no scatter is quoted
    assert t["SLAM - ref median"][1] == pytest.approx(15.0)
    assert np.isnan(t["SLAM - ref std"][1]) and np.isnan(t["APOGEE - ref robust std"][1])


def test_regression_slope_matches_scipy_and_shows_shrinkage():
    from scipy import stats

    rng = np.random.default_rng(3)
    truth = rng.normal(3800.0, 110.0, 200)
    shrunk = 3800.0 + 0.6 * (truth - 3800.0) + rng.normal(0.0, 20.0, 200)
    assert val.regression_slope(shrunk, truth) == pytest.approx(stats.linregress(truth, shrunk).slope, rel=1e-12)
    # by hand: pred = 1 + 0.5 truth exactly
    assert val.regression_slope([1.5, 2.0, 2.5, np.nan], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(0.5)
    assert np.isnan(val.regression_slope([1.0, 2.0], [5.0, 5.0]))
