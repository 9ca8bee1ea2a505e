"""Model grids (mdslam.modelgrid) and model-grid SLAM (mdslam.gridslam).

References: the SVO file format (stand-in files written here and served by the
replay of ``archive_replay.svo``), Gaussian FWHMs adding in quadrature (hand
arithmetic), an analytic spectral grid with known truth, scipy's Pearson r for
the 54 real LAMOST spectra.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from scipy import stats

from mdslam import gridslam, modelgrid

C_KMS = 299792.458


# --------------------------------------------------------------------------- #
# the SVO format
# --------------------------------------------------------------------------- #
def test_read_svo_spectrum_header_columns_and_order(tmp_path):
    from archive_replay.svo import spectrum_ascii, spectrum_flux

    p = tmp_path / "m.txt"
    p.write_bytes(spectrum_ascii(3000.0, 5.0, -0.5))
    wave, flux, params = modelgrid.read_svo_spectrum(p)
    assert params["teff"] == 3000.0 and params["logg"] == 5.0 and params["meta"] == -0.5
    assert np.all(np.diff(wave) > 0)  # the file lists them decreasing
    assert wave[0] >= 5000.0 and wave[-1] < 10000.0
    # the values are the ones written (6 significant digits)
    np.testing.assert_allclose(flux, spectrum_flux(wave, 3000.0), rtol=1e-5)


def test_read_svo_spectrum_error_names_the_file(tmp_path):
    p = tmp_path / "err.txt"
    p.write_text("<html><body>Error: spectrum not available</body></html>\n")
    with pytest.raises(modelgrid.ModelGridError, match="err.txt"):
        modelgrid.read_svo_spectrum(p)
    q = tmp_path / "microns.txt"
    q.write_text("# column 1: WAVELENGTH (MICRON), w\n# column 2: FLUX (ERG/CM2/S/A), f\n"
                 + "\n".join(f"{0.6 + i * 1e-3} 1.0" for i in range(20)))
    with pytest.raises(modelgrid.ModelGridError, match="microns.txt.*MICRON"):
        modelgrid.read_svo_spectrum(q)


def test_parse_svo_index_rows():
    from archive_replay.svo import MODELS, index_votable

    tab = modelgrid.parse_svo_index(index_votable("http://x").decode())
    assert list(tab["fid"]) == [m[0] for m in MODELS]
    assert list(tab["teff"]) == [m[1] for m in MODELS]
    assert list(tab["m_h"]) == [m[3] for m in MODELS]
    with pytest.raises(modelgrid.ModelGridError, match="no model rows"):
        modelgrid.parse_svo_index("<VOTABLE></VOTABLE>")


# --------------------------------------------------------------------------- #
# resolution
# --------------------------------------------------------------------------- #
def test_lsf_sigma_by_hand():
    # FWHM_v = c * sqrt(1/1800^2 - 1/2000^2) = 299792.458 * 2.4216e-4 = 72.60 km/s; sigma = FWHM / 2.3548
    assert modelgrid.lsf_sigma_kms(1800.0, 2000.0) == pytest.approx(30.83, abs=0.01)
    assert modelgrid.lsf_sigma_kms(2000.0, 2000.0) == 0.0
    assert modelgrid.lsf_sigma_kms(1800.0) == pytest.approx(C_KMS / 1800.0 / 2.35482, rel=1e-4)


@pytest.mark.parametrize("uniform", [False, True])
def test_convolution_gives_the_target_width_and_keeps_the_line_area(uniform):
    # a narrow line (R_in ~ 40000) broadened to R = 1800: sigma^2 adds, area is conserved
    lam0, r_in, r_out = 7000.0, 40000.0, 1800.0
    if uniform:
        wave = 6800.0 * np.exp(np.arange(30000) * 1.0 / C_KMS)   # 1 km/s pixels
    else:
        rng = np.random.default_rng(3)
        wave = np.sort(rng.uniform(6800.0, 7200.0, 40000))
    s_in = lam0 / r_in / 2.35482
    flux = 1.0 - 0.5 * np.exp(-0.5 * ((wave - lam0) / s_in) ** 2)
    w, f = modelgrid.convolve_to_resolution(wave, flux, r_out, r_in)
    depth = 1.0 - f
    area = np.trapezoid(depth, w)
    assert area == pytest.approx(0.5 * s_in * np.sqrt(2 * np.pi), rel=0.01)
    mean = np.trapezoid(depth * w, w) / area
    sigma = np.sqrt(np.trapezoid(depth * (w - mean) ** 2, w) / area)
    assert sigma == pytest.approx(lam0 / r_out / 2.35482, rel=0.02)


# --------------------------------------------------------------------------- #
# archive mode: BT-Settl from SVO through the replay
# --------------------------------------------------------------------------- #
@pytest.fixture
def svo(tmp_path, monkeypatch):
    from archive_replay.server import ReplayServer
    from archive_replay.svo import add_svo_routes

    monkeypatch.setenv("MDSLAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MDSLAM_ARCHIVE_RETRIES", "2")
    monkeypatch.setenv("MDSLAM_ARCHIVE_BACKOFF", "0.05")
    monkeypatch.delenv("MDSLAM_ARCHIVE_OFFLINE", raising=False)
    with ReplayServer() as srv:
        add_svo_routes(srv)
        monkeypatch.setenv("MDSLAM_SVO_URL", srv.url)
        yield srv


def test_btsettl_grid_through_the_svo_replay_then_from_the_cache(svo, monkeypatch, tmp_path):
    from archive_replay.svo import BROKEN_FID

    g = modelgrid.btsettl_grid(teff=(2900, 3100), logg=(4.5, 5.0), m_h=(-0.5, 0.0), progress=False)
    # fids 101, 102, 104, 105 read; 103 is an error page (skipped, counted); 106 is outside
    assert sorted(g.labels["teff"]) == [2900.0, 3000.0, 3000.0, 3000.0]
    assert g.labels.meta["n_skipped"] == 1 and f"{BROKEN_FID}.txt" in g.labels.meta["skipped"][0]
    assert g.label_names == ["teff", "logg", "m_h"] and np.isinf(g.resolution)
    assert np.all(np.diff(g.wavelength) > 0) and g.wavelength[0] >= 5900.0
    n_requests = len(svo.requests(r"ssap"))
    assert n_requests == 6  # the index and five spectra
    rec = tmp_path / "cache" / "archive" / "svo" / "bt-settl-cifist" / "101.txt.json"
    assert "fid=101" in rec.read_text()
    # offline, from the cache: no request
    monkeypatch.setenv("MDSLAM_ARCHIVE_OFFLINE", "1")
    g2 = modelgrid.btsettl_grid(teff=(2900, 3100), logg=(4.5, 5.0), m_h=(-0.5, 0.0), progress=False)
    np.testing.assert_array_equal(g2.flux, g.flux)
    assert len(svo.requests(r"ssap")) == n_requests
    # and on to LAMOST: normalised spectra on the 1596-pixel grid
    s = modelgrid.to_survey(g, "lamost")
    assert s.flux.shape == (4, 1596) and s.resolution == 1800.0
    assert 0.9 < np.median(s.flux) < 1.1


def test_btsettl_offline_without_cache_says_what_to_do(svo, monkeypatch):
    from mdslam.archive import ArchiveUnavailableError

    monkeypatch.setenv("MDSLAM_ARCHIVE_OFFLINE", "1")
    with pytest.raises(ArchiveUnavailableError, match="svo"):
        modelgrid.btsettl_grid(progress=False)


# --------------------------------------------------------------------------- #
# SLAM_0 -> draws -> SLAM_1 on a grid with known truth
# --------------------------------------------------------------------------- #
def _analytic_grid() -> modelgrid.ModelGrid:
    """Normalised spectra whose line depths are smooth known functions of (Teff, [M/H])."""
    wave = np.geomspace(6200.0, 8800.0, 240)
    t = np.arange(2800.0, 3801.0, 100.0)
    m = np.array([-1.0, -0.5, 0.0])
    tt, mm = (a.ravel() for a in np.meshgrid(t, m, indexing="ij"))
    x, z = (tt - 3300.0) / 500.0, mm + 0.5
    flux = np.ones((tt.size, wave.size))
    for k, c in enumerate(np.linspace(6300.0, 8700.0, 12)):
        depth = 0.3 + 0.15 * np.sin(k + 1.0) * x + 0.1 * np.cos(2.0 * k) * z + 0.05 * x * z
        flux -= depth[:, None] * np.exp(-0.5 * ((wave - c) / 15.0) ** 2)
    labels = Table({"teff": tt, "m_h": mm})
    return modelgrid.ModelGrid(wave, flux, labels, ["teff", "m_h"], 1800.0, "analytic", "test grid",
                               np.full(flux.shape, 1e4), ["K", "dex"])


def test_grid_slam_recovers_known_truth_of_held_out_draws():
    grid = _analytic_grid()
    kw = dict(C=(100.0,), epsilon=(0.01, 0.05), gamma=(0.3, 1.0), n_jobs=1)
    res = gridslam.train_grid_slam(grid, n_draw=120, cv=3, seed=0, slam_kwargs=kw)
    assert res.draws.meta["ranges"] == {"teff": (2800.0, 3800.0), "m_h": (-1.0, 0.0)}
    tab = gridslam.noisy_test(res, [20.0, 60.0, 300.0], n_test=40, seed=5)
    hi = {r["label"]: r for r in tab[tab["snr"] == 300.0]}
    lo = {r["label"]: r for r in tab[tab["snr"] == 20.0]}
    # spread of a uniform 1000 K range is 289 K; SLAM_1 must do far better at high SNR
    assert hi["teff"]["spread"] == pytest.approx(1000 / np.sqrt(12), rel=0.2)
    assert hi["teff"]["scatter"] < 40.0 and hi["teff"]["skill"] > 0.97
    assert hi["m_h"]["scatter"] < 0.08 and hi["m_h"]["skill"] > 0.9
    assert lo["teff"]["scatter"] > hi["teff"]["scatter"]
    # the error law fitted on these runs gives e_teff_cv, and TEFF_BT_ERR uses it
    assert res.slam1.error_law_ is not None
    pred = res.slam1.predict_table(res.slam0.predict_flux(np.array([[3300.0, -0.5]])), snr=[50.0])
    cat = gridslam.teff_bt_table(pred, {"obsid": ([1], "LAMOST obsid")}, grid_name="analytic")
    assert cat["TEFF_BT"][0] == pytest.approx(3300.0, abs=30.0)
    assert cat["TEFF_BT_ERR"][0] == pytest.approx(pred["e_teff_cv"][0]) and cat["TEFF_BT"].unit == "K"


def test_skill_score_and_uniform_draws_by_hand():
    assert gridslam.skill_score([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
    # predicting the mean everywhere: MSE = Var -> skill 0
    assert gridslam.skill_score([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == pytest.approx(0.0)
    d = gridslam.draw_uniform({"teff": (2800.0, 4500.0), "m_h": (-1.0, 0.0)}, 20000, seed=1)
    assert d["teff"].min() >= 2800.0 and d["teff"].max() <= 4500.0
    assert np.mean(d["m_h"]) == pytest.approx(-0.5, abs=0.01)
    assert np.std(d["teff"]) == pytest.approx(1700.0 / np.sqrt(12.0), rel=0.02)


def test_photon_noise_has_the_stated_snr():
    wave = np.geomspace(6200.0, 8800.0, 2000)
    flux = np.ones((400, wave.size))
    noisy, ivar = gridslam.add_photon_noise(flux, 25.0, wave, np.random.default_rng(0))
    assert np.std(noisy - flux) == pytest.approx(1 / 25.0, rel=0.01)
    np.testing.assert_allclose(ivar, 625.0)


def test_compare_literature_handles_the_default_feh():
    pred = Table({"teff": [3000.0, 3200.0, 3400.0, 3600.0], "m_h": [-0.3, 0.0, -0.2, 0.1],
                  "flag": [0, 0, 0, 1]})
    lit = Table({"teff": [3100.0, 3250.0, 3450.0, 3000.0], "feh": [-0.05, -0.1, -0.05, 0.2]})
    tab = gridslam.compare_literature(pred, lit)
    t, t_all = tab[tab["label"] == "teff"]
    assert t["n"] == 3 and t["n_flagged"] == 1 and t["bias"] == pytest.approx(-50.0)
    assert t_all["n"] == 4 and t_all["sample"] == "all labelled"
    m = tab[tab["label"] == "m_h"]
    assert list(m["n"]) == [1, 3]  # only one unflagged star has a non-default [Fe/H]
    assert m["bias"][0] == pytest.approx(0.1)


# --------------------------------------------------------------------------- #
# the CLI end to end on the 54 real LAMOST spectra
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_train_grid_cli_then_predict_labels_the_54_lamost_spectra(tmp_path, data_mirror, monkeypatch):
    from mdslam import cli, datasets

    monkeypatch.setenv("MDSLAM_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "grid.npz"
    assert cli.main(["train-grid", "--grid", "mock", "--survey", "lamost", "--n-draw", "300", "--cv", "3",
                     "--reduced", "--m-h-range=-1,0.5", "--test-snr", "20,100", "--n-test", "40",
                     "--out", str(model)]) == 0
    assert model.exists()
    files = datasets.fetch("lamost_dr7_spectra")
    out = tmp_path / "labels.fits"
    assert cli.main(["predict", "--model", str(model), "--format", "lamost", "--out", str(out),
                     *map(str, files)]) == 0
    cat = Table.read(out)
    assert len(cat) == len(files) == 54
    labelled = np.isfinite(cat["teff"]) & (cat["flag"] == 0)
    assert np.all(labelled | (cat["flag"] != 0))  # every spectrum: labels or a flag
    # [M/H] drawn up to +0.5 (the mock grid's top node): with Li's -1..0 most of these
    # near-solar stars sit on the [M/H] edge and are flagged
    lab = datasets.load("lamost_dr7_labels")
    row = {str(f): i for i, f in enumerate(lab["file_name"])}
    idx = np.array([row[str(f).split("/")[-1]] for f in cat["file"]])
    ok = labelled
    r = stats.pearsonr(cat["teff"][ok], np.asarray(lab["teffin"], float)[idx[ok]]).statistic
    assert ok.sum() >= 40 and r > 0.7


def test_compare_teff_bt_matches_references_on_the_sky_hand_computed():
    """TEFF_BT - Teff per reference: B20 shares stars 1 and 2 (d = +100, +140 K); a reference
    without the paper's numbers gets empty paper columns; flagged stars are left out."""
    from astropy.table import Table

    from mdslam import gridslam

    cat = Table({"ra": [10.0, 20.0, 30.0], "dec": [5.0, 5.0, 5.0], "TEFF_BT": [3400.0, 3540.0, 3000.0],
                 "FLAG_BT": [0, 0, 1]})
    b20 = Table({"RA": [10.0, 20.0, 30.0], "DEC": [5.0 + 0.5 / 3600, 5.0, 5.0], "TEFF": [3300.0, 3400.0, 2000.0]})
    other = Table({"ra": [50.0], "dec": [5.0], "teff": [3000.0]})
    stats, matched = gridslam.compare_teff_bt(cat, {"B20": (b20, "TEFF", "RA", "DEC"),
                                                    "mine": (other, "teff", "ra", "dec")},
                                              select=np.asarray(cat["FLAG_BT"]) == 0)
    b = stats[stats["reference"] == "B20"][0]
    assert b["n"] == 2 and b["offset"] == pytest.approx(120.0) and b["scatter"] == pytest.approx(20.0)
    assert (b["paper_offset"], b["paper_scatter"]) == ("~110 K", "~90 K") and "Fig. 3" in b["where"]
    m = stats[stats["reference"] == "mine"][0]
    assert m["n"] == 0 and np.isnan(m["offset"]) and m["paper_offset"] == ""
    assert len(matched["B20"]) == 2 and str(stats["offset"].unit) == "K"
