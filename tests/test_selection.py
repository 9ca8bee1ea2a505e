"""Selection cuts of Li 2021 and Qiu 2025: hand-made points, then counts on the real mirror tables."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from mdslam import crossmatch, relations
from mdslam import selection as sel


# --------------------------------------------------------------------------- #
# hand-made inputs
# --------------------------------------------------------------------------- #
def test_cut_flow_counts_in_order():
    t = Table({"a": [1, 2, 3, 4, 5, 6], "b": [0, 1, 0, 1, 0, 1]})
    flow = sel.cut_flow(t, {"a > 2": t["a"] > 2, "b == 1": lambda tt: tt["b"] == 1})
    assert list(flow["cut"]) == ["input", "a > 2", "b == 1"]
    # a > 2 keeps 3,4,5,6 (removes 2); b == 1 keeps 4,6 (removes 2 more); b == 1 alone passes 3
    assert list(flow["n_kept"]) == [6, 4, 2]
    assert list(flow["n_removed"]) == [0, 2, 2]
    assert list(flow["n_pass_alone"]) == [6, 4, 3]
    assert flow["frac_kept"][-1] == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="shape"):
        sel.cut_flow(t, [("bad", np.ones(3, bool))])


def test_column_turns_sentinels_and_masks_into_nan():
    t = Table({"TEFF": np.ma.array([3500.0, -9999.0, 3600.0], mask=[False, False, True])})
    col = sel.column(t, "teff")  # case-insensitive lookup
    assert col[0] == 3500.0 and np.isnan(col[1]) and np.isnan(col[2])
    with pytest.raises(KeyError, match="not in table"):
        sel.column(t, "logg")


def test_li2021_gaia_cuts_on_a_hand_table():
    t = Table({"parallax": [10.0, 10.0, 10.0, 10.0], "parallax_error": [1.0, 3.0, 1.0, 1.0],
               "phot_g_mean_flux_over_error": [50.0, 50.0, 19.0, 50.0],
               "phot_bp_mean_flux_over_error": [50.0] * 4, "phot_rp_mean_flux_over_error": [50.0] * 4,
               "ruwe": [1.0, 1.0, 1.0, 1.5], "snri": [6.0, 6.0, 6.0, 6.0]})
    # row 1: 10/3 = 3.3 < 5; row 2: G flux S/N 19 < 20; row 3: ruwe 1.5
    np.testing.assert_array_equal(sel.li2021_gaia_quality(t), [True, False, False, False])
    assert len(sel.li2021_gaia_cuts(t)) == 6
    assert len(sel.li2021_gaia_cuts(t, snr=None, ruwe=None)) == 4


def test_li2021_cmd_quadrangle():
    # edges at X = 2: bright 5 + 11.5/3.6 * 0.6 = 6.9167, faint 5 + 11.5/3.3 * 1.3 = 9.5303
    x = np.array([2.0, 2.0, 2.0, 1.0, 0.7, 5.0, 4.0, 4.5])
    mg = np.array([8.0, 6.5, 10.0, 4.9, 5.0, 16.5, 16.5, 17.0])
    np.testing.assert_array_equal(sel.in_li2021_cmd(x, mg),
                                  [True, False, False, False, True, True, True, False])
    poly = sel.li2021_cmd_polygon()
    np.testing.assert_allclose(poly, [[0.7, 5], [1.4, 5], [5, 16.5], [4, 16.5]])


def test_qiu2025_cmd_criteria():
    # (2.5, 10): 10 > 6; 10 < 3.75*2.5 + 7.5 = 16.875; 10 > 3.28*2.5 + 0.1 = 8.3 -> in
    # (2.5, 8): fails criterion 3 (8 < 8.3); (0.5, 12): white dwarf, 12 > 3.75*0.5 + 7.5 = 9.375
    # (1.0, 5.5): fails criterion 1
    x = [2.5, 2.5, 0.5, 1.0]
    y = [10.0, 8.0, 12.0, 5.5]
    np.testing.assert_array_equal(sel.in_qiu2025_cmd(x, y), [True, False, False, False])
    np.testing.assert_array_equal(sel.in_qiu2025_cmd(x, y, ruwe=[1.5, 1.0, 1.0, 1.0]), [False] * 4)
    poly = sel.qiu2025_cmd_polygon(5.0)
    # corners: (-1.5/3.75, 6) = (-0.4, 6); (5.9/3.28, 6) = (1.79878, 6); (5, 16.5); (5, 26.25)
    np.testing.assert_allclose(poly, [[-0.4, 6], [5.9 / 3.28, 6], [5, 16.5], [5, 26.25]])


def test_label_and_binary_cuts_by_hand():
    t = Table({"TEFF": [3500.0, 4600.0, 3500.0, -9999.0], "TEFF_ERR": [50.0, 50.0, 50.0, 50.0],
               "M_H": [0.0, 0.0, 0.6, 0.0], "M_H_ERR": [0.05, 0.05, 0.05, 0.05],
               "LOGG": [4.8, 4.8, 4.8, 4.8]})
    np.testing.assert_array_equal(sel.li2021_apogee_labels(t), [True, False, False, False])
    b = Table({"feh_err": [0.1, 0.3, 0.1, 0.1], "R_chance_align": [0.05, 0.05, 0.2, 0.05],
               "ruwe1": [1.0, 1.0, 1.0, 1.0], "ruwe2": [1.0, 1.0, 1.0, 1.41]})
    np.testing.assert_array_equal(sel.qiu2025_binaries(b), [True, False, False, False])
    assert len(sel.qiu2025_binary_cuts(b, feh_err=None)) == 3


def test_qiu2025_domain():
    assert sel.QIU2025_USABLE_RANGE["teff"] == (3100.0, 3900.0)
    assert sel.QIU2025_TOTAL_RANGE["feh"] == (-1.0, 0.5)
    np.testing.assert_array_equal(sel.in_qiu2025_domain(teff=[3000, 3500], feh=[0.0, -0.7]), [False, False])
    np.testing.assert_array_equal(sel.in_qiu2025_domain(teff=[3000, 3500], feh=[0.0, -0.7], usable=False),
                                  [True, True])


def test_hyades_cuts_on_hand_stars():
    # a Hyades-like star: parallax 21 mas, pmra 100 (ratio 4.76), pmdec -28 (ratio -1.33)
    t = Table({"ra": [66.7, 66.7, 80.0], "dec": [15.9, 15.9, 15.9], "parallax": [21.0, 0.045, 21.0],
               "pmra": [100.0, 0.2, 100.0], "pmdec": [-28.0, -0.06, -28.0]})
    np.testing.assert_array_equal(sel.hyades_members(t), [True, False, False])
    # the literal reading takes row 1 (parallax 0.045 mas, ratios 4.4 and -1.3) and not the Hyad
    np.testing.assert_array_equal(sel.hyades_members(t, distance_reading=False), [False, True, False])


def test_occam_cuts_by_hand():
    t = Table({"RV_PROB": [0.5, 0.5, 0.005, 0.5], "FEH_PROB": [0.5, -1.0, 0.5, 0.5],
               "PM_PROB": [0.5, 0.5, 0.5, 2.0], "CG_PROB": [0.9, 0.9, 0.9, -9999.99]})
    np.testing.assert_array_equal(sel.occam_members(t), [True, False, False, True])
    np.testing.assert_array_equal(sel.occam_members(t, cg_min=0.7), [True, False, False, False])
    np.testing.assert_array_equal(sel.occam_members(t, feh_min=None), [True, True, False, True])
    with pytest.raises(ValueError, match="no cut"):
        sel.occam_member_cuts(t, rv_min=None, feh_min=None, pm_min=None)


# --------------------------------------------------------------------------- #
# real tables
# --------------------------------------------------------------------------- #
HYADES_COLS = dict(ra="RA_ICRS", dec="DE_ICRS", parallax="Plx", pmra="pmRA", pmdec="pmDE")


def test_hyades_literal_reading_selects_nothing_distance_reading_recovers_members(load):
    cand = load("hyades_candidates_gaiadr2_2mass")  # 786 Douglas et al. candidates x Gaia DR2
    g18 = load("hyades_gaia2018_members")  # 515 Gaia Collaboration 2018 members
    assert len(cand) == 786 and len(g18) == 515
    literal = sel.hyades_members(cand, distance_reading=False, **HYADES_COLS)
    reading = sel.hyades_members(cand, **HYADES_COLS)
    assert literal.sum() == 0
    assert reading.sum() == 168
    # no Gaia 2018 member has 0.04 < parallax < 0.05 mas; 344 of 515 have 20 < parallax < 25 mas
    plx = sel.column(g18, "plx")
    assert np.sum((plx > 0.04) & (plx < 0.05)) == 0
    assert np.sum((plx > 20) & (plx < 25)) == 344
    src = crossmatch.normalize_gaia_id(cand["Source"])
    in_g18 = np.isin(src, crossmatch.normalize_gaia_id(g18["Source"]))
    cone = sel.hyades_cuts(cand, **HYADES_COLS)["within 5 deg"]
    # 175 Gaia 2018 members lie in the 5-degree cone; the L21 criteria keep 135 of them,
    # and 135 of the 168 selected stars are Gaia 2018 members
    assert (in_g18 & cone).sum() == 175
    assert (in_g18 & reading).sum() == 135
    flow = sel.cut_flow(cand, sel.hyades_cuts(cand, **HYADES_COLS))
    assert list(flow["n_kept"]) == [786, 260, 233, 232, 168]


def test_hyades_on_raw_gaia_rows(load):
    cone = load("hyades_gaiadr2_cone_full")
    cols = dict(HYADES_COLS)
    assert sel.hyades_members(cone, distance_reading=False, **cols).sum() == 0
    m = sel.hyades_members(cone, **cols)
    assert m.sum() == 179
    src = crossmatch.normalize_gaia_id(cone["Source"])
    g18 = crossmatch.normalize_gaia_id(load("hyades_gaia2018_members")["Source"])
    assert np.isin(src[m], g18).sum() == 139
    # L21 sec. 3.1 criteria 1-2 on the same rows (DR2 ratio columns; no RUWE in this query)
    flow = sel.cut_flow(cone, sel.li2021_gaia_cuts(
        cone, parallax_over_error="RPlx", flux_over_error={"g": "RFG", "bp": "RFBP", "rp": "RFRP"},
        ruwe=None, snr=None))
    assert list(flow["n_kept"]) == [999, 812, 812, 775, 773]


def test_occam_probability_cuts_on_b20_members(load):
    b20 = load("birky2020_table6_full")
    dr16 = crossmatch.match_apogee_id(b20, load("occam_member_dr16"))
    dr17 = crossmatch.match_apogee_id(b20, load("occam_member_dr17"))
    assert (len(dr16), len(dr17)) == (951, 1167)
    # OCCAM's own definition (RV, [Fe/H], PM probabilities > 0.01): few M dwarfs survive,
    # because FEH_PROB tests ASPCAP [Fe/H], which is biased low for M dwarfs
    assert sel.occam_members(dr16).sum() == 65
    assert sel.occam_members(dr17).sum() == 50
    # without FEH_PROB, with the Cantat-Gaudin probability > 0.5: 174 DR16 members
    kw = dict(feh_min=None, cg_min=0.5)
    assert sel.occam_members(dr16, **kw).sum() == 174
    assert sel.occam_members(dr16, feh_min=None, cg_min=0.7).sum() == 160
    flow = sel.cut_flow(dr16, sel.occam_member_cuts(dr16, **kw))
    assert list(flow["n_kept"]) == [951, 701, 264, 174]


def test_li2021_label_cuts_on_gaia_xp_apogee(load):
    xp = load("gaiaxp_apogee")
    cuts = sel.li2021_apogee_label_cuts(xp, teff="teff", teff_err="teff_err", m_h="fe_h",
                                        m_h_err="fe_h_err", logg="logg")
    flow = sel.cut_flow(xp, cuts)
    assert list(flow["n_kept"]) == [40226, 15408, 15405, 15069, 15069, 1082]


def test_cmd_regions_on_carmenes_dwarfs(load):
    t = load("carmenes_cif20").copy()
    t["MG0"] = relations.absolute_magnitude(sel.column(t, "GG_mag"), sel.column(t, "Plx"))
    t["BP_RP0"] = sel.column(t, "BP_mag") - sel.column(t, "RP_mag")
    flow = sel.cut_flow(t, sel.qiu2025_cmd_cuts(t, ruwe="RUWE"))
    assert list(flow["n_kept"]) == [2483, 2385, 2366, 2278, 1658]
    assert sel.in_li2021_cmd(t["BP_RP0"], t["MG0"]).sum() == 2174


def test_li2021_cmd_giant_cuts_by_hand():
    # at BP-RP = 2.0 the quadrangle spans M_G from 5 + 11.5/3.6 * 0.6 = 6.917 (bright edge)
    # to 5 + 11.5/3.3 * 1.3 = 9.530 (faint edge)
    bp_rp = np.array([1.0, 2.0, 2.0, 2.0, np.nan, 2.0])
    mg = np.array([2.0, 6.0, 8.0, 10.0, 8.0, 4.5])
    a_g = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0])   # the last: M_G + A_G = 5.5 passes the giant cut
    cuts = sel.li2021_cmd_giant_cuts(bp_rp, mg, a_g)
    assert list(cuts) == ["finite colour and M_G", "M_G + A_G > 5 (giants removed)", "inside the Fig. 1 quadrangle"]
    assert cuts["finite colour and M_G"].tolist() == [True, True, True, True, False, True]
    assert cuts["M_G + A_G > 5 (giants removed)"].tolist() == [False, True, True, True, False, True]
    assert cuts["inside the Fig. 1 quadrangle"].tolist() == [False, False, True, False, False, False]
