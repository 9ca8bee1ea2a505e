"""Chapter 4's Mann et al. comparison helpers, on tables built by hand."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from mdslam import relations
from mdslam.compendium import comparisons


def _mann(bp, rp, j, h, feh, teff, ra, dec):
    return Table({"BPmag": bp, "RPmag": rp, "Jmag": j, "Hmag": h, "[Fe/H]": feh, "Teff": teff,
                  "RAdeg": ra, "DEdeg": dec})


def test_calibration_range_and_cuts_by_hand():
    mann = _mann([12.0, 13.0, np.nan], [10.0, 10.5, 9.0], [8.0, 9.0, 7.0], [7.5, 8.4, 6.3],
                 [-0.5, 0.3, 0.1], [3500.0, 3300.0, 3100.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    r = comparisons.mann_teff_calibration_range(mann)
    # BP-RP: 2.0, 2.5 (NaN left out); J-H: 0.5, 0.6, 0.7; [Fe/H]: -0.5..0.3
    assert r["BP-RP"] == pytest.approx((2.0, 2.5))
    assert r["J-H"] == pytest.approx((0.5, 0.7))
    assert r["[Fe/H]"] == pytest.approx((-0.5, 0.3))
    cuts = comparisons.mann_teff_cuts(np.array([2.0, 2.6, 2.2, 2.2]), np.array([0.6, 0.6, 0.75, 0.6]),
                                      np.array([0.0, 0.0, 0.0, np.nan]), mann)
    masks = list(cuts.values())
    assert list(masks[0]) == [True, False, True, True]      # edges are inside
    assert list(masks[1]) == [True, True, False, True]
    assert list(masks[2]) == [True, True, True, False]      # no [Fe/H]: outside
    assert "2 to 2.5 mag" in list(cuts)[0] and "Mann" in list(cuts)[0]


def test_logg_cuts_use_the_radius_relation_range():
    lo, hi = relations.MANN2015_RADIUS_MKS_RANGE
    (name, mask), = comparisons.mann_logg_cuts(np.array([lo - 0.01, lo, 7.0, hi, hi + 0.01, np.nan])).items()
    assert list(mask) == [False, True, True, True, False, False]
    assert "M_Ks" in name


def test_zero_point_finds_a_known_colour_offset():
    # two Mann stars whose Teff is the relation at their synthetic colour; observed colours 0.1 mag bluer
    synth = np.array([2.2, 2.6])
    jh = np.array([0.6, 0.62])
    teff = relations.mann2015_teff(synth, jh)
    mann = _mann(synth + 10.0, [10.0, 10.0], jh + 8.0, [8.0, 8.0], [0.0, 0.0], teff, [10.0, 20.0], [5.0, -5.0])
    b20_mann = Table({"ID": ["2M_A", "2M_B", "2M_C"], "RA": [10.0, 20.0, 30.0], "DEC": [5.0, -5.0, 0.0]})
    b20 = Table({"APOGEE_ID": ["2M_B", "2M_A"], "BP_RP": [2.5, 2.1]})
    z = comparisons.mann_relation_zero_point(mann, b20_mann, b20)
    c = z["relation(synthetic BP-RP) - Mann Teff"]
    assert c.n == 2 and c.median == pytest.approx(0.0, abs=1e-9)
    assert z["observed - synthetic BP-RP"].median == pytest.approx(-0.1)
    # the relation falls with colour (dTeff/dX < 0 here), so bluer observed colours give hotter Teff
    hotter = relations.mann2015_teff(synth - 0.1, jh) - teff
    assert np.all(hotter > 0)
    assert z["relation(observed BP-RP) - Mann Teff"].median == pytest.approx(np.median(hotter))
