"""The FITS catalogue: columns from SLAM predictions, units and descriptions in the header."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from mdslam import catalogue


@pytest.fixture
def pred():
    """A predict_table-like output for 4 stars with labels teff, logg, fe_h."""
    t = Table()
    t["id"] = np.array([11, 12, 13, 14], dtype=np.int64)
    t["snr"] = [20.0, 50.0, 100.0, 8.0]
    for name, unit, vals in (("teff", "K", [3500.0, 3600.0, 3700.0, 3300.0]),
                             ("logg", "dex", [4.8, 4.7, 4.6, 5.0]),
                             ("fe_h", "dex", [-0.1, 0.0, 0.2, np.nan])):
        t[name] = vals
        t[name].unit = unit
        t[f"e_{name}"] = np.full(4, 0.01)
        t[f"e_{name}_cv"] = np.full(4, 0.1)
    t["chi2"] = [300.0, 320.0, 340.0, np.nan]
    t["rchi2"] = t["chi2"] / 340
    t["n_good_pixels"] = [343, 343, 343, 0]
    t["converged"] = [True, True, True, False]
    t["flag"] = np.array([0, 0, 32, 1], dtype=np.int32)
    t["flag"].description = "1: failed; 32: logg outside the domain"
    t.meta["LABELS"] = "teff,logg,fe_h"
    return t


def _build(pred):
    cv = Table({"id": np.array([12, 13], dtype=np.int64), "teff": [3610.0, 3690.0],
                "logg": [4.71, 4.62], "fe_h": [0.05, 0.15]})
    return catalogue.build_catalogue(
        pred, {"SOURCE_ID": (pred["id"], "Gaia EDR3 source_id"),
               "APOGEE_ID": (["2M1", "2M2", "2M3", "2M4"], "APOGEE DR17 APOGEE_ID")},
        training_labels="APOGEE DR17", cv=cv, in_train=[False, True, True, False], track="xp")


def test_build_catalogue_names_columns_after_the_papers(pred):
    cat = _build(pred)
    assert cat.colnames[:3] == ["SOURCE_ID", "APOGEE_ID", "SNR"]
    for col in ("TEFF", "TEFF_ERR", "TEFF_ERR_CV", "LOGG", "FE_H", "FE_H_ERR_CV", "IN_TRAIN",
                "TEFF_CV", "FE_H_CV", "CHI2", "RCHI2", "N_GOOD_PIXELS", "CONVERGED", "FLAG"):
        assert col in cat.colnames, col
    assert str(cat["TEFF"].unit) == "K" and str(cat["FE_H"].unit) == "dex"
    assert "APOGEE DR17" in cat["TEFF"].description
    # CV labels only for training stars, matched by id (star 12 -> 3610 K, star 13 -> 3690 K)
    np.testing.assert_array_equal(np.isnan(cat["TEFF_CV"]), [True, False, False, True])
    np.testing.assert_allclose(np.asarray(cat["TEFF_CV"])[1:3], [3610.0, 3690.0])
    np.testing.assert_allclose(np.asarray(cat["TEFF"]), pred["teff"])
    assert cat.meta["TRACK"] == "xp" and cat.meta["LABELS"] == "teff,logg,fe_h"
    assert all(cat[c].description for c in cat.colnames)


def test_write_catalogue_keeps_units_and_descriptions_in_the_header(pred, tmp_path):
    cat = _build(pred)
    path = catalogue.write_catalogue(cat, tmp_path / "cat.fits")
    with fits.open(path) as hdul:
        assert hdul[0].header["TRACK"] == "xp" and hdul[0].header["CREATOR"].startswith("mdslam")
        h = hdul["CATALOGUE"].header
        i_feh = cat.colnames.index("FE_H") + 1
        i_teff = cat.colnames.index("TEFF") + 1
        assert h[f"TTYPE{i_feh}"] == "FE_H"
        assert h[f"TUNIT{i_feh}"] == "dex"   # kept although FITS does not define dex
        assert h[f"TUNIT{i_teff}"] == "K"
        assert h[f"TCOMM{i_feh}"] == cat["FE_H"].description
        assert len(hdul["CATALOGUE"].data) == 4
    back = catalogue.read_catalogue(path)
    assert back.colnames == cat.colnames
    assert str(back["FE_H"].unit) == "dex" and str(back["TEFF"].unit) == "K"
    assert back["FLAG"].description == cat["FLAG"].description
    np.testing.assert_array_equal(np.asarray(back["SOURCE_ID"]), [11, 12, 13, 14])
    np.testing.assert_allclose(np.asarray(back["TEFF_CV"]), np.asarray(cat["TEFF_CV"]), equal_nan=True)
    assert back.meta["TRACK"] == "xp"


def test_describe_columns_counts_valid_values(pred):
    cat = _build(pred)
    d = catalogue.describe_columns(cat)
    assert list(d["column"]) == cat.colnames
    row = {r["column"]: r for r in d}
    assert row["FE_H"]["unit"] == "dex" and row["FE_H"]["n_valid"] == 3      # one NaN of 4
    assert row["TEFF_CV"]["n_valid"] == 2                                      # two training stars
    assert row["APOGEE_ID"]["type"] == "str" and row["APOGEE_ID"]["n_valid"] == 4
    assert row["SOURCE_ID"]["description"] == "Gaia EDR3 source_id"


def test_mean_std_text_lists_small_samples():
    assert catalogue.mean_std_text([0.1, -0.2, np.nan]) == "n=2: -0.20, +0.10"
    v = [0.0, 0.1, 0.2, 0.3, 0.4]
    # mean 0.2, population std sqrt(0.02) = 0.1414
    assert catalogue.mean_std_text(v, unit="dex") == "+0.20 ± 0.14 dex (n=5)"
    assert catalogue.mean_std_text([]) == "n=0"


def test_qiu2025_table4_columns(pred):
    cat = _build(pred)
    t4 = catalogue.qiu2025_table4(cat, feh_description="SLAM [Fe/H] trained on APOGEE DR17")
    assert t4.colnames == ["SOURCE_ID", "APOGEE_ID", "SNR", "Teff", "e_Teff", "logg", "e_logg", "alphaM",
                           "e_alphaM", "FeH", "e_FeH", "FeH_niu", "e_FeH_niu", "FLAG"]
    np.testing.assert_array_equal(t4["Teff"], cat["TEFF"])
    np.testing.assert_array_equal(t4["e_FeH"], cat["FE_H_ERR_CV"])      # empirical law, not formal
    assert np.all(np.isnan(t4["alphaM"])) and np.all(np.isnan(t4["FeH_niu"]))
    assert str(t4["e_Teff"].unit) == "K" and t4["alphaM"].unit == "dex"
    assert t4["FeH"].description == "SLAM [Fe/H] trained on APOGEE DR17"
    assert t4["e_logg"].description == "Uncertainty in log g from SLAM"


def test_a_catalogue_read_back_writes_again(pred, tmp_path):
    """Header keywords read back into meta (EXTNAME, CREATOR) do not break a second write."""
    catalogue.write_catalogue(_build(pred), tmp_path / "a.fits")
    back = catalogue.read_catalogue(tmp_path / "a.fits")
    t4 = catalogue.qiu2025_table4(back)
    catalogue.write_catalogue(t4, tmp_path / "b.fits")
    again = catalogue.read_catalogue(tmp_path / "b.fits")
    assert again.colnames == t4.colnames and again.meta["TRACK"] == "xp"
    with fits.open(tmp_path / "b.fits") as h:
        assert h[1].name == "CATALOGUE" and "EXTNAME" not in h[0].header


DOMAIN3 = np.array([[3585.0, 4000.0], [4.0, 5.5], [-1.0, 0.5]])  # (Teff K, log g dex, [Fe/H] dex)


def _pred2(teff, logg, ids=(11, 12, 13, 14)):
    """A two-label predict_table-like output."""
    t = Table({"id": np.array(ids, dtype=np.int64), "teff": teff, "logg": logg,
               "e_teff": np.full(len(teff), 5.0), "e_logg": np.full(len(teff), 0.02),
               "e_teff_cv": np.full(len(teff), 60.0), "e_logg_cv": np.full(len(teff), 0.15),
               "flag": np.zeros(len(teff), dtype=np.int32)})
    return t


def test_teff_logg_route_known_answers():
    # inside both; Teff below the domain; 2-label fit failed (NaN); log g below; on the edges (inclusive)
    teff = [3700.0, 3300.0, np.nan, 3590.0, 3585.0, 4000.0, 4000.1]
    logg = [4.7, 5.0, 4.8, 3.9, 4.0, 5.5, 4.5]
    route = catalogue.teff_logg_route(teff, logg, DOMAIN3[:2])
    assert route.tolist() == [True, False, True, False, True, True, False]
    with pytest.raises(ValueError, match="domain3"):
        catalogue.teff_logg_route(teff, logg, DOMAIN3)


def test_add_teff_logg_model_routes_and_flags_by_hand(pred):
    cat = _build(pred)  # 3-label TEFF 3500, 3600, 3700, 3300; FLAG 0, 0, 32, 1
    out = catalogue.add_teff_logg_model(cat, _pred2([3450.0, 3620.0, 3710.0, 3200.0], [4.9, 4.7, 4.6, 5.1]), DOMAIN3)
    # rows 0 and 3: the 2-label model puts them below 3585 K -> 2-label Teff/log g, FE_H flagged (16 << 2 = 64)
    assert out["TEFF_MODEL"].tolist() == ["2-label", "3-label", "3-label", "2-label"]
    assert out["LOGG_MODEL"].tolist() == out["TEFF_MODEL"].tolist()
    assert set(out["FE_H_MODEL"]) == {"3-label"}
    np.testing.assert_array_equal(out["TEFF"], [3450.0, 3600.0, 3700.0, 3200.0])
    np.testing.assert_array_equal(out["LOGG"], [4.9, 4.7, 4.6, 5.1])
    np.testing.assert_array_equal(out["TEFF_ERR_CV"], [60.0, 0.1, 0.1, 60.0])
    np.testing.assert_array_equal(out["TEFF_3L"], [3500.0, 3600.0, 3700.0, 3300.0])
    np.testing.assert_array_equal(out["TEFF_2L"], [3450.0, 3620.0, 3710.0, 3200.0])
    np.testing.assert_array_equal(out["FE_H"][:3], cat["FE_H"][:3])  # [Fe/H] never replaced
    assert out["FLAG"].tolist() == [64, 0, 32, 1 | 64]
    assert out.meta["ROUTE"] == "2 3-label, 2 2-label"
    assert str(out["TEFF_2L"].unit) == "K" and "TEFF_MODEL" in out["TEFF"].description
    for c in ("TEFF", "TEFF_ERR", "TEFF_ERR_CV", "LOGG", "LOGG_ERR"):   # routed columns keep unit and description
        assert out[c].unit == cat[c].unit and out[c].description, c
    assert out["TEFF_ERR"].description.startswith(cat["TEFF_ERR"].description)
    assert cat["TEFF"][0] == 3500.0  # the input catalogue is not changed


def _posterior(pred, ml_offset):
    """``pred`` as a posterior-mean table: ``<label>_ml`` = label + offset, HEADLINE in meta."""
    post = Table(pred, copy=True)
    for n, d in ml_offset.items():
        post[f"{n}_ml"] = np.asarray(post[n], float) + d
        post[f"{n}_ml"].unit = post[n].unit
        post[f"e_{n}"].description = "posterior standard deviation, CV-calibrated"
    post.meta["HEADLINE"] = "posterior mean (Li 2021 eq. 2), prior training"
    return post


def test_a_posterior_catalogue_names_its_headline_and_keeps_the_ml_labels(pred, tmp_path):
    cat = _build(_posterior(pred, {"teff": -300.0, "logg": 0.0, "fe_h": 0.1}))
    np.testing.assert_allclose(np.asarray(cat["TEFF"]), pred["teff"])               # headline: posterior mean
    np.testing.assert_allclose(np.asarray(cat["TEFF_ML"]), np.asarray(pred["teff"]) - 300.0)
    assert "posterior mean" in cat["TEFF"].description and "posterior" in cat["TEFF_ERR"].description
    assert "maximum likelihood" in cat["TEFF_ML"].description and "FLAG" in cat["TEFF_ML"].description
    back = catalogue.read_catalogue(catalogue.write_catalogue(cat, tmp_path / "p.fits"))
    assert back.meta["HEADLINE"].startswith("posterior mean") and str(back["TEFF_ML"].unit) == "K"
    assert _build(pred).meta["HEADLINE"].startswith("maximum likelihood") and "TEFF_ML" not in _build(pred).colnames


def test_route_follows_the_two_label_maximum_likelihood_labels(pred):
    """Posterior means inside the 3-label domain, ML Teff below it: routed to the 2-label model by ML."""
    cat = _build(_posterior(pred, {"teff": 0.0, "logg": 0.0, "fe_h": 0.0}))
    pred2 = _posterior(_pred2([3600.0, 3620.0, 3710.0, 3600.0], [4.8] * 4), {"teff": 0.0, "logg": 0.0})
    pred2["teff_ml"] = [3400.0, 3620.0, 3710.0, 3300.0]       # stars 0 and 3: below 3585 K by likelihood
    out = catalogue.add_teff_logg_model(cat, pred2, DOMAIN3)
    assert out["TEFF_MODEL"].tolist() == ["2-label", "3-label", "3-label", "2-label"]
    np.testing.assert_array_equal(out["TEFF"], [3600.0, 3600.0, 3700.0, 3600.0])  # 2-label posterior means
    np.testing.assert_array_equal(out["TEFF_ML"], [3400.0, 3600.0, 3700.0, 3300.0])
    assert out["FLAG"].tolist() == [64, 0, 32, 1 | 64]


def test_add_teff_logg_model_rejects_other_stars(pred):
    cat = _build(pred)
    with pytest.raises(ValueError, match="pred2 has 3 rows"):
        catalogue.add_teff_logg_model(cat, _pred2([3500.0] * 3, [4.8] * 3, ids=(11, 12, 13)), DOMAIN3)
    with pytest.raises(ValueError, match="ids differ"):
        catalogue.add_teff_logg_model(cat, _pred2([3500.0] * 4, [4.8] * 4, ids=(11, 12, 14, 13)), DOMAIN3)


def test_routed_catalogue_writes_and_reads_back(pred, tmp_path):
    out = catalogue.add_teff_logg_model(_build(pred), _pred2([3450.0, 3620.0, 3710.0, 3200.0], [4.9] * 4), DOMAIN3)
    back = catalogue.read_catalogue(catalogue.write_catalogue(out, tmp_path / "c.fits"))
    assert back["TEFF_MODEL"].tolist() == ["2-label", "3-label", "3-label", "2-label"]
    assert back.meta["ROUTE"] == "2 3-label, 2 2-label"


def test_qiu2025_table4_says_which_model_gave_each_label(pred):
    out = catalogue.add_teff_logg_model(_build(pred), _pred2([3450.0, 3620.0, 3710.0, 3200.0], [4.9] * 4), DOMAIN3)
    t4 = catalogue.qiu2025_table4(out)
    assert t4.colnames[-4:] == ["FLAG", "TEFF_MODEL", "LOGG_MODEL", "FE_H_MODEL"]
    np.testing.assert_array_equal(t4["Teff"], [3450.0, 3600.0, 3700.0, 3200.0])
    assert t4["TEFF_MODEL"].tolist() == ["2-label", "3-label", "3-label", "2-label"]


def _qiu2025_table4_as_printed() -> list[tuple[str, str, str]]:
    """(column, unit, description) of Qiu et al. 2025 Table 4, parsed from the paper's text
    (``tests/data/qiu2025_table4.txt``, where the PDF's underscores became spaces)."""
    from pathlib import Path

    lines = (Path(__file__).parent / "data" / "qiu2025_table4.txt").read_text(encoding="utf-8").splitlines()
    assert lines[1].split() == ["Column", "Units", "Description"]
    rows = []
    for line in lines[2:]:
        tok = line.split()
        i = next(k for k, t in enumerate(tok) if t in ("K", "dex"))
        rows.append(("_".join(tok[:i]), tok[i], " ".join(tok[i + 1:])))
    return rows


def test_every_column_of_qiu2025_table4_is_written_with_its_unit(pred, tmp_path):
    """Each column the paper prints in Table 4 is in the written file, with the printed unit (TUNITn)."""
    printed = _qiu2025_table4_as_printed()
    assert len(printed) == 10 and printed[8][:2] == ("FeH_niu", "dex")
    niu = np.array([0.1, 0.2, 0.3, np.nan])
    t4 = catalogue.qiu2025_table4(_build(pred), feh_niu=niu, feh_niu_err=np.full(4, 0.05))
    path = catalogue.write_catalogue(t4, tmp_path / "t4.fits")
    back = catalogue.read_catalogue(path)
    with fits.open(path) as h:
        header = h["CATALOGUE"].header
    for name, unit, desc in printed:
        assert name in back.colnames, name
        assert header[f"TUNIT{back.colnames.index(name) + 1}"] == unit, name
        assert str(back[name].unit) == unit
        words = desc.replace("α", "alpha").replace("log g", "logg").split()
        assert back[name].description.replace("log g", "logg").split()[: len(words)] == words, name
    np.testing.assert_allclose(np.asarray(back["FeH_niu"]), niu, equal_nan=True)
    # Qiu's Table 4 names no flag column: the writer's own flags follow the ten printed columns
    assert back.colnames[-1] == "FLAG" and back["FLAG"].description
