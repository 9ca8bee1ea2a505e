"""Cross-matches by Gaia id, APOGEE_ID and sky position: hand tables, then the real catalogues."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from mdslam import crossmatch as cm


# --------------------------------------------------------------------------- #
# hand tables
# --------------------------------------------------------------------------- #
def test_normalize_ids():
    ids = np.ma.array([b" 2m00012151+5634379 ", b"2M00000000+0000000", b""], mask=[False, False, True])
    np.testing.assert_array_equal(cm.normalize_apogee_id(ids), ["2M00012151+5634379", "2M00000000+0000000", ""])
    g = cm.normalize_gaia_id(["Gaia DR2 3312744219987686144", "48026706557926528", "n/a"])
    np.testing.assert_array_equal(g, [3312744219987686144, 48026706557926528, -1])
    assert g.dtype == np.int64
    # int64 exactness: these two ids differ by 1 and stay distinct
    assert len(set(cm.normalize_gaia_id(np.array([2**61 + 1, 2**61 + 2], dtype=np.int64)))) == 2


def test_match_keys_is_an_inner_join_with_duplicates():
    il, ir = cm.match_keys(np.array(["a", "b", "c", ""]), np.array(["b", "a", "b", ""]), invalid="")
    pairs = sorted(zip(il.tolist(), ir.tolist(), strict=True))
    assert pairs == [(0, 1), (1, 0), (1, 2)]


def test_match_gaia_id_exact_and_rounded():
    left = Table({"source_id": np.array([3312744219987686144, 48026706557926528, 7], dtype=np.int64),
                  "x": [1, 2, 3]})
    right = Table({"source_id": np.array([48026706557926528, 3312744219987686145], dtype=np.int64),
                   "x": [20, 10]})
    j = cm.match_gaia_id(left, right)
    assert len(j) == 1 and j["x_1"][0] == 2 and j["x_2"][0] == 20
    # a float copy with 15 significant digits (as in B20's CSV) pairs with the nearest exact id
    rounded = Table({"GAIA_ID": [3.31274421998769e18, 4.80267065579265e16], "y": [1, 2]})
    jr = cm.match_gaia_id(rounded, left, "GAIA_ID", "source_id", rounded="left")
    assert list(jr["y"]) == [1, 2]
    assert list(jr["source_id"]) == [3312744219987686144, 48026706557926528]
    jr2 = cm.match_gaia_id(left, rounded, "source_id", "GAIA_ID", rounded="right")
    assert list(jr2["x"]) == [1, 2]
    with pytest.raises(ValueError, match="rounded"):
        cm.match_gaia_id(left, right, rounded="both")


def test_match_sky_radius_and_one_to_one():
    left = Table({"ra": [10.0, 10.0, 20.0], "dec": [0.0, 1.0 / 3600, 0.0]})
    right = Table({"ra": [10.0 + 0.5 / 3600, 30.0], "dec": [0.0, 0.0]})
    j = cm.match_sky(left, right, radius_arcsec=2.0)
    # both left rows 0 and 1 are within 2" of right row 0; only the closer (0.5") is kept
    assert len(j) == 1
    assert j["sep_arcsec"][0] == pytest.approx(0.5, abs=1e-6)
    j2 = cm.match_sky(left, right, radius_arcsec=2.0, one_to_one=False)
    assert len(j2) == 2
    # separation of row 1: sqrt(0.5^2 + 1^2) = 1.1180 arcsec
    assert j2["sep_arcsec"][1] == pytest.approx(np.hypot(0.5, 1.0), abs=1e-6)
    assert j2.colnames == ["ra_1", "dec_1", "ra_2", "dec_2", "sep_arcsec"]


# --------------------------------------------------------------------------- #
# real catalogues
# --------------------------------------------------------------------------- #
def test_b20_x_gaia_xp_by_apogee_id(load):
    b20 = load("birky2020_table6_full")
    xp = load("gaiaxp_apogee")
    j = cm.match_apogee_id(b20, xp, "APOGEE_ID", "apogee_id")
    assert len(j) == 152 and len(set(j["APOGEE_ID"])) == 152
    # the same 152 by float-rounded Gaia id would be 151 pairs of which 9 are wrong stars
    # (dense Orion and Kepler fields: neighbouring ids differ by less than the rounding)
    jg = cm.match_gaia_id(b20, xp, "GAIA_ID", "gaiaedr3_source_id", rounded="left")
    same = cm.normalize_apogee_id(jg["APOGEE_ID"]) == cm.normalize_apogee_id(jg["apogee_id"])
    assert (len(jg), int(same.sum())) == (151, 142)


def test_b20_full_results_gaia_id_is_not_the_rows_star(load):
    t6 = load("birky2020_table6_full")
    full = load("birky2020_full_results")
    j = cm.match_apogee_id(t6, full, positions=("RA", "DEC", "RA", "DEC"))
    assert len(j) == 14827
    assert np.nanmedian(j["sep_arcsec"]) < 1.0  # same stars by APOGEE_ID
    rel = np.abs(np.asarray(j["GAIA_ID_1"], float) - np.asarray(j["GAIA_ID_2"], float)) / np.asarray(
        j["GAIA_ID_2"], float)
    # ... but the int64 GAIA_ID of full_results agrees with table 6 (even to 6 digits) for only
    # 16 of the 14,827 stars: that column is not the rows' Gaia id
    assert int(np.sum(rel < 1e-6)) == 16


def test_b20_x_occam(load):
    b20 = load("birky2020_table6_full")
    j16 = cm.match_apogee_id(b20, load("occam_member_dr16"))
    j17 = cm.match_apogee_id(b20, load("occam_member_dr17"))
    assert (len(j16), len(j17)) == (951, 1167)
    assert (len(set(j16["APOGEE_ID"])), len(set(j17["APOGEE_ID"]))) == (926, 1152)


def test_carmenes_cif03_x_cif20_by_position(load):
    cif03 = load("carmenes_cif03")  # Gaia DR3 positions (epoch 2016.0)
    cif20 = load("carmenes_cif20")  # Gaia DR2 positions (epoch 2015.5)
    j = cm.match_sky(cif03, cif20, radius_arcsec=2.0, left_ra="ra", left_dec="dec",
                     right_ra="RA_J2015", right_dec="DE_J2015")
    assert len(j) == 2143
    assert np.median(j["sep_arcsec"]) < 0.2
    k1 = np.char.strip(np.asarray(j["Karmn_1"]).astype(str))
    k2 = np.char.strip(np.asarray(j["Karmn_2"]).astype(str))
    assert int(np.sum(k1 == k2)) == 2114


def _toy_cif():
    # systems: 1 = M+M, 2 = K + M (listed M first), 3 = triple (left out), 4 = M + white dwarf,
    # 0 = single star (no system)
    return Table({
        "ID_star": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        "ID_system": [1, 1, 2, 2, 3, 3, 3, 4, 4, 0],
        "SpT": ["M3.0 V", "M4.5 V", "M1.0 V", "K5 V", "M2 V", "M3 V", "M4 V", "M0.0 V", "DA", "M5 V"],
        "SpTnum": [73.0, 74.5, 71.0, 65.0, 72.0, 73.0, 74.0, 70.0, np.nan, 75.0],
        "GaiaDR3_id": np.array([101, 102, 103, 104, 105, 106, 107, 108, 109, 110], dtype=np.int64),
        "s01": [np.nan, 420.0, 55.5, np.nan, 10.0, 20.0, 30.0, np.nan, np.nan, np.nan],
        "Fe_H": [0.1, 0.0, -0.2, -0.1, np.nan, np.nan, np.nan, 0.0, np.nan, 0.3],
    })


def test_carmenes_pairs_from_two_star_systems():
    pairs = cm.carmenes_pairs(_toy_cif())
    assert list(pairs["ID_system"]) == [1, 2, 4]          # the triple and the single are left out
    assert list(pairs["kind"]) == ["M+M", "FGK+M", "other"]
    # the FGK star is component 1 of an FGK+M pair (rows 3 then 2 of the table)
    assert (pairs["i1"][1], pairs["i2"][1]) == (3, 2)
    assert list(pairs["GaiaDR3_id1"]) == [101, 104, 108] and list(pairs["GaiaDR3_id2"]) == [102, 103, 109]
    # s01 sits on one row of a pair; NaN when neither row has it
    np.testing.assert_allclose(pairs["s01_au"], [420.0, 55.5, np.nan])


def test_attach_component_values_by_gaia_id():
    pairs = cm.carmenes_pairs(_toy_cif())
    labels = Table({"id": np.array([102, 104, 999], dtype=np.int64), "fe_h": [0.2, -0.3, 9.0],
                    "e_fe_h": [0.1, 0.2, 0.3]})
    out = cm.attach_component_values(pairs, labels, right_col="id", value_cols=("fe_h", "e_fe_h"))
    assert list(out["has_1"]) == [False, True, False] and list(out["has_2"]) == [True, False, False]
    np.testing.assert_allclose(out["fe_h_1"], [np.nan, -0.3, np.nan])
    np.testing.assert_allclose(out["fe_h_2"], [0.2, np.nan, np.nan])
    np.testing.assert_allclose(out["e_fe_h_2"], [0.1, np.nan, np.nan])
    assert "fe_h_1" not in pairs.colnames                     # the input is not modified


def test_carmenes_cif03_pairs_on_the_real_catalogue(load):
    pairs = cm.carmenes_pairs(load("carmenes_cif03"))
    kinds = dict(zip(*np.unique(pairs["kind"], return_counts=True), strict=True))
    assert kinds["M+M"] == 326                 # the 326 M+M pairs of the data README
    assert kinds["FGK+M"] == 48                # F/G/K dwarf + M (the README's 72 include WD + M)
    assert int(((pairs["kind"] == "M+M") & (pairs["s01_au"] < 3000)).sum()) == 286


# --------------------------------------------------------------------------- #
# OCCAM: one row per star, members, pre-main-sequence marks, Table 3 statistics
# --------------------------------------------------------------------------- #
def _occam_hand():
    """Star A is listed under two clusters (as Briceno 1 / ASCC 16 in DR17), B and C once."""
    occ = Table({"CLUSTER": ["ASCC 16", "Briceno 1", "NGC_2682", "NGC 2682"],
                 "APOGEE_ID": ["2M_A", "2m_a ", "2M_B", "2M_C"],
                 "FE_H": [-0.10, -0.10, 0.00, 0.05],
                 "RV_PROB": [0.9, 0.8, 0.9, 0.0], "FEH_PROB": [-1.0, -1.0, 0.5, 0.5],
                 "PM_PROB": [0.5, -0.4, 0.9, 0.9], "CG_PROB": [0.9, -9999.99, 0.8, 0.8]})
    lab = Table({"apogee_id": ["2M_A", "2M_B", "2M_C", "2M_D"], "fe_h": [-0.30, 0.10, 0.25, 0.0],
                 "logg_apogee": [4.3, 4.7, 4.8, 4.7]})
    return occ, lab


def test_occam_stars_keeps_one_row_per_star_and_marks_members_and_pms():
    occ, lab = _occam_hand()
    stars = cm.occam_stars(occ, lab, cluster_feh={"NGC 2682": 0.01})
    assert stars.meta["N_ROWS"] == 4 and len(stars) == 3
    a = stars[cm.normalize_apogee_id(stars["APOGEE_ID"]) == "2M_A"][0]
    # the ASCC 16 row passes RV > 0.01, PM > 0.01, CG > 0.5; the Briceno 1 row does not
    assert a["cluster"] == "ASCC 16" and a["member"] and a["n_listed"] == 2
    assert a["clusters_listed"] == "ASCC 16; Briceno 1"
    assert a["young_cluster"] and a["low_logg"] and a["pms"]
    b, c = (stars[cm.normalize_apogee_id(stars["APOGEE_ID"]) == k][0] for k in ("2M_B", "2M_C"))
    assert b["member"] and not b["pms"] and b["cluster"] == "NGC 2682" and b["cluster_fe_h"] == 0.01
    assert not c["member"]                      # RV_PROB = 0 fails
    assert np.isnan(a["cluster_fe_h"])


def test_occam_comparison_by_hand():
    occ, lab = _occam_hand()
    stars = cm.occam_stars(occ, lab)
    per, s = cm.occam_comparison(stars, "fe_h", "FE_H")
    # differences: A -0.30 - -0.10 = -0.20, B 0.10, C 0.20
    assert s["n"] == 3 and s["n_clusters"] == 2
    assert s["mean"] == pytest.approx(np.mean([-0.2, 0.1, 0.2]))
    assert s["std"] == pytest.approx(np.std([-0.2, 0.1, 0.2]))
    ngc = per[per["cluster"] == "NGC 2682"][0]
    assert ngc["n"] == 2 and ngc["mean_diff"] == pytest.approx(0.15)
    per_m, s_m = cm.occam_comparison(stars, "fe_h", "FE_H", select=stars["member"] & ~stars["pms"])
    assert s_m["n"] == 1 and np.isnan(s_m["std"]) and s_m["mean"] == pytest.approx(0.1)


def test_occam_dr17_briceno1_stars_are_ascc16_stars(load):
    """The real DR17 table lists every Briceno 1 star under ASCC 16 as well."""
    occ = load("occam_member_dr17")
    name = np.char.strip(np.asarray(occ["CLUSTER"]).astype(str))
    ids = cm.normalize_apogee_id(occ["APOGEE_ID"])
    bri, ascc = set(ids[name == "Briceno 1"]), set(ids[name == "ASCC 16"])
    assert len(bri) > 100 and bri <= ascc
    lab = Table({"apogee_id": sorted(bri)[:50], "fe_h": np.zeros(50)})
    stars = cm.occam_stars(occ, lab, logg_col=None)
    assert len(stars) == 50 and stars.meta["N_ROWS"] >= 100
    assert np.all(stars["n_listed"] >= 2)


def test_compare_catalogues_by_obsid_hand_computed():
    """ours - theirs matched on obsid: d = 20, 50, 300 K; ids <= 0 never match."""
    from mdslam.crossmatch import compare_catalogues

    ours = Table({"obsid": [1, 2, 3, 4, -9999], "TEFF": [3500.0, 3600.0, 3700.0, 3800.0, 3000.0]})
    theirs = Table({"obsid": [3, 2, 1, 99, -9999], "TEFF_AP": [3400.0, 3550.0, 3480.0, 4000.0, 3000.0]})
    stats, matched = compare_catalogues(ours, theirs, {"TEFF": "TEFF_AP"}, key=("obsid", "obsid"),
                                        reference="L21")
    row = stats[0]
    assert (row["label"], row["reference"], row["n"]) == ("TEFF", "L21", 3)
    assert row["offset"] == 50.0                                  # median of 20, 50, 300
    assert row["mean"] == pytest.approx(370.0 / 3)
    m = 370.0 / 3
    assert row["scatter"] == pytest.approx(np.sqrt(((20 - m) ** 2 + (50 - m) ** 2 + (300 - m) ** 2) / 3))
    assert row["robust_scatter"] == pytest.approx(1.4826 * 30.0)  # |d - 50| = 30, 0, 250
    assert sorted(np.asarray(matched["TEFF"]).tolist()) == [3500.0, 3600.0, 3700.0]
    # a selection drops a star before matching
    stats2, _ = compare_catalogues(ours, theirs, {"TEFF": "TEFF_AP"}, key=("obsid", "obsid"),
                                   select=[True, True, False, True, True])
    assert stats2["n"][0] == 2 and stats2["offset"][0] == pytest.approx(35.0)


def test_compare_catalogues_by_sky_position_and_no_overlap():
    from mdslam.crossmatch import compare_catalogues

    ours = Table({"ra": [10.0, 20.0], "dec": [0.0, 0.0], "TEFF_BT": [3300.0, 3400.0]})
    # 1 arcsec and 10 arcsec away along RA at dec 0
    theirs = Table({"RAJ2000": [10.0 + 1 / 3600, 20.0 + 10 / 3600], "DEJ2000": [0.0, 0.0], "Teff": [3200.0, 3000.0]})
    stats, matched = compare_catalogues(ours, theirs, {"TEFF_BT": "Teff"}, sky=("ra", "dec", "RAJ2000", "DEJ2000"),
                                        radius_arcsec=3.0, reference="TESS CDC")
    assert stats["n"][0] == 1 and stats["offset"][0] == 100.0 and stats["scatter"][0] == 0.0
    assert matched["sep_arcsec"][0] == pytest.approx(1.0, rel=1e-6)
    none, _ = compare_catalogues(ours, theirs[1:], {"TEFF_BT": "Teff"}, sky=("ra", "dec", "RAJ2000", "DEJ2000"),
                                 radius_arcsec=3.0)
    assert none["n"][0] == 0 and np.isnan(none["offset"][0])
    with pytest.raises(ValueError, match="'TEFF_AP'"):
        compare_catalogues(ours, theirs, {"TEFF_BT": "TEFF_AP"}, sky=("ra", "dec", "RAJ2000", "DEJ2000"))
    with pytest.raises(ValueError, match="key="):
        compare_catalogues(ours, theirs, {"TEFF_BT": "Teff"})
