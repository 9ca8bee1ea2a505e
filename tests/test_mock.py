"""Tests of the mock survey generator (mdslam.mock): grids, determinism, physics, noise."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import vstack

from mdslam import datasets, mock
from mdslam.mock import (
    DWARF_SEQUENCE,
    FEH_RANGE,
    I_BAND,
    MOCK_WAVE_RANGE,
    SURVEYS,
    TEFF_RANGE,
    MockSurvey,
    logg_from_teff,
    spectral_indices,
    spt_to_teff,
    teff_to_spt,
)
from mdslam.relations import logg_from_mass_radius
from mdslam.spectra import Spectra


@pytest.fixture(scope="module", autouse=True)
def _templates(data_mirror):
    """Every test here needs the template spectra and B20 from the data mirror."""
    return data_mirror


TEFF_M = spt_to_teff(np.arange(8.0))  # M0 ... M7


@pytest.fixture(scope="module")
def lamost() -> MockSurvey:
    return MockSurvey("lamost", seed=42)


@pytest.fixture(scope="module")
def clean() -> MockSurvey:
    """No cosmics, dead pixels or calibration error: for exact noise checks."""
    return MockSurvey("lamost", seed=7, cosmic_rate=0.0, bad_pixel_rate=0.0, calib_sigma=0.0)


# --------------------------------------------------------------------------- #
# relations and grids
# --------------------------------------------------------------------------- #
def test_spt_teff_relation_roundtrip_and_table():
    s = np.linspace(0, 9, 91)
    assert np.allclose(teff_to_spt(spt_to_teff(s)), s, atol=1e-6)
    slope = np.diff(spt_to_teff(s)) / 0.1
    assert np.all((slope < -100) & (slope > -250))  # smooth, ~165 K per subtype
    assert TEFF_RANGE == pytest.approx((float(spt_to_teff(9.0)), float(spt_to_teff(0.0))))
    assert TEFF_RANGE[0] == pytest.approx(2385, abs=5) and TEFF_RANGE[1] == pytest.approx(
        3833, abs=5
    )
    assert np.isnan(teff_to_spt(4000.0)) and np.isnan(spt_to_teff(-0.5))
    # the cubic stays within 50 K of every Pecaut & Mamajek row
    rows = spt_to_teff(np.asarray(DWARF_SEQUENCE["spt"]))
    assert np.max(np.abs(rows - DWARF_SEQUENCE["teff"])) < 50


def test_logg_relation_main_sequence():
    rows = logg_from_mass_radius(DWARF_SEQUENCE["mass"], DWARF_SEQUENCE["radius"])
    fit = logg_from_teff(DWARF_SEQUENCE["teff"])
    assert np.sqrt(np.mean((fit - rows) ** 2)) < 0.04
    assert 4.6 < logg_from_teff(3850.0) < 4.75
    assert 5.15 < logg_from_teff(2800.0) < 5.3
    t = np.linspace(*TEFF_RANGE, 50)
    assert np.all(np.diff(logg_from_teff(t)) < 0)  # hotter dwarfs: lower gravity


@pytest.mark.parametrize("name", ["lamost", "boss"])
def test_mock_grid_is_on_the_survey_lattice(name):
    g = SURVEYS[name]
    w = MockSurvey(name).wavelength
    assert MOCK_WAVE_RANGE[0] <= w[0] and w[-1] <= MOCK_WAVE_RANGE[1]
    assert np.allclose(np.diff(np.log10(w)), 1e-4)
    k = (np.log10(w) - g.loglam_start) / 1e-4
    assert np.allclose(k, np.round(k), atol=1e-6)
    native = g.native_wavelength
    assert native[0] <= w[0] and w[-1] <= native[-1]
    assert g.velocity_per_pixel == pytest.approx(69.03, abs=0.01)


def test_lamost_native_grid_matches_lamost_files():
    g = SURVEYS["lamost"]
    assert g.native_wavelength[0] == pytest.approx(3700.0, abs=0.1)
    assert g.native_wavelength[-1] == pytest.approx(9099.6, abs=0.5)


# --------------------------------------------------------------------------- #
# determinism and streaming
# --------------------------------------------------------------------------- #
def test_same_seed_identical_different_seed_different():
    a_spec, a_truth = MockSurvey("lamost", seed=5).generate(40)
    b_spec, b_truth = MockSurvey("lamost", seed=5).generate(40)
    c_spec, c_truth = MockSurvey("lamost", seed=6).generate(40)
    assert np.array_equal(a_spec.flux, b_spec.flux)
    assert np.array_equal(a_spec.ivar, b_spec.ivar)
    assert np.array_equal(a_spec.mask, b_spec.mask)
    for name in a_truth.colnames:
        assert np.array_equal(a_truth[name], b_truth[name]), name
    assert not np.allclose(a_spec.flux, c_spec.flux)
    assert not np.allclose(a_truth["teff_true"], c_truth["teff_true"])
    # spectrum() repeats its sequence of calls
    s1 = MockSurvey("lamost", seed=5).spectrum([3300, 3500], [0.0, -0.3])
    s2 = MockSurvey("lamost", seed=5).spectrum([3300, 3500], [0.0, -0.3])
    assert np.array_equal(s1.flux, s2.flux)


def test_chunks_equal_one_shot(lamost):
    spec, truth = lamost.generate(600)
    chunks = list(lamost.iter_chunks(600, chunk_size=250))
    assert [len(s) for s, _ in chunks] == [250, 250, 100]
    flux = np.concatenate([s.flux for s, _ in chunks])
    ivar = np.concatenate([s.ivar for s, _ in chunks])
    assert np.array_equal(flux, spec.flux)
    assert np.array_equal(ivar, spec.ivar)
    joined = vstack([t for _, t in chunks])
    for name in truth.colnames:
        assert np.array_equal(joined[name], truth[name]), name
    # a later start continues the same survey
    part, part_truth = lamost.generate(100, start=300)
    assert np.array_equal(part.flux, spec.flux[300:400])
    assert np.array_equal(part_truth["id"], truth["id"][300:400])
    # the cheap truth draw agrees
    t_only = lamost.draw_truth(600)
    assert np.array_equal(t_only["teff_true"], truth["teff_true"])
    assert np.array_equal(t_only["snr_true"], truth["snr_true"])


# --------------------------------------------------------------------------- #
# physics
# --------------------------------------------------------------------------- #
def test_tio_deepens_toward_later_types(lamost):
    flux = lamost.model(TEFF_M, 0.0)
    ind = spectral_indices(lamost.wavelength, flux)
    assert np.all(np.diff(ind["TiO5"]) < 0)  # TiO5 falls as the band deepens, M0 -> M7
    assert np.all(np.diff(ind["CaH"]) < 0)
    w = lamost.wavelength
    band = np.median(flux[:, (w > 7140) & (w < 7160)], axis=1)
    cont = np.median(flux[:, (w > 7030) & (w < 7050)], axis=1)
    assert np.all(np.diff(band / cont) < 0)
    # dwarfs of solar metallicity have zeta ~ 1 (Lepine et al. 2007)
    assert np.all(np.abs(ind["zeta"][2:] - 1.0) < 0.15)


@pytest.mark.parametrize("teff", [3430.0, 3210.0, 3060.0, 2810.0])
def test_metal_poor_weaker_tio_relative_to_cah(lamost, teff):
    feh = np.array([0.3, 0.0, -0.25, -0.5, -0.75, -1.0])
    ind = spectral_indices(lamost.wavelength, lamost.model(teff, feh))
    assert np.all(np.diff(ind["TiO5"]) > 0)  # weaker TiO as [M/H] falls
    assert np.all(np.diff(ind["zeta"]) < 0)  # ... relative to CaH: zeta falls
    d_tio = np.abs(np.log(ind["TiO5"][-1] / ind["TiO5"][1]))
    d_cah = np.abs(np.log(ind["CaH"][-1] / ind["CaH"][1]))
    assert d_tio > 2 * d_cah
    # class centres land in the right zeta classes for mid-M types
    z = dict(zip(feh, ind["zeta"], strict=True))
    assert z[0.0] > 0.825
    assert 0.45 < z[-0.5] < 0.85


def test_model_is_smooth_in_labels(lamost):
    """Small label steps give small, proportionate flux changes (no jumps at template knots)."""
    teff = np.linspace(3000, 3700, 141)  # 5 K steps across several knots
    f = np.log(lamost.model(teff, -0.2))
    step = np.abs(np.diff(f, axis=0)).mean(axis=1)
    assert step.max() < 3 * np.median(step)
    feh = np.linspace(-1.5, 0.5, 201)
    g = np.log(lamost.model(3300.0, feh))
    step = np.abs(np.diff(g, axis=0)).mean(axis=1)
    assert step.max() < 3 * np.median(step)


def test_lamost_resolution_lower_than_boss():
    w_l, w_b = MockSurvey("lamost").wavelength, MockSurvey("boss").wavelength
    f_l = MockSurvey("lamost").model(3300.0, 0.0)[0]
    f_b = MockSurvey("boss").model(3300.0, 0.0)[0]

    # depth of the Na I 8183/8195 doublet (vacuum ~8185/8197 A)
    def depth(w, f):
        core = np.min(f[(w > 8180) & (w < 8202)])
        cont = np.median(f[(w > 8140) & (w < 8170)])
        return 1 - core / cont

    assert depth(w_b, f_b) > depth(w_l, f_l) > 0.1


# --------------------------------------------------------------------------- #
# noise, rv, activity, survey effects
# --------------------------------------------------------------------------- #
def test_constant_noise_matches_snr():
    kw = dict(seed=11, noise_model="constant", cosmic_rate=0.0, bad_pixel_rate=0.0)
    snr = np.array([10.0, 30.0, 100.0, 300.0])
    noisy = MockSurvey("lamost", **kw).spectrum(3300.0, -0.2, snr=snr)
    clean = MockSurvey("lamost", **kw).spectrum(3300.0, -0.2, snr=snr, noise=False)
    rel = (noisy.flux - clean.flux) / clean.flux
    assert np.allclose(np.std(rel, axis=1) * snr, 1.0, rtol=0.1)
    assert np.allclose(clean.flux * np.sqrt(clean.ivar), snr[:, None], rtol=1e-6)


def test_photon_noise_median_snr_in_i_band(clean):
    snr = np.array([15.0, 40.0, 150.0])
    noisy = clean.spectrum([2900.0, 3400.0, 3800.0], 0.0, snr=snr)
    twin = MockSurvey("lamost", seed=7, cosmic_rate=0.0, bad_pixel_rate=0.0, calib_sigma=0.0)
    model = twin.spectrum([2900.0, 3400.0, 3800.0], 0.0, snr=snr, noise=False)
    w = clean.wavelength
    band = (w >= I_BAND[0]) & (w <= I_BAND[1])
    pixel_snr = model.flux * np.sqrt(model.ivar)
    assert np.allclose(np.median(pixel_snr[:, band], axis=1), snr, rtol=0.01)
    pull = (noisy.flux - model.flux) * np.sqrt(noisy.ivar)
    assert np.allclose(np.std(pull, axis=1), 1.0, atol=0.05)
    emp = np.median(model.flux[:, band], axis=1) / np.std(
        noisy.flux[:, band] - model.flux[:, band], axis=1
    )
    assert np.allclose(emp, snr, rtol=0.1)
    # photon noise: the faint blue end is much noisier than the i band
    blue = w < 4500
    assert np.all(np.median(pixel_snr[:, blue], axis=1) < 0.5 * snr)


def test_rv_shift_moves_features_by_expected_pixels(clean):
    # exactly 3 survey pixels: log10(1 + v/c) = 3e-4
    v3 = mock.C_KMS * (10**3e-4 - 1)
    f0 = clean.model(3300.0, 0.0, rv=0.0)[0]
    f3 = clean.model(3300.0, 0.0, rv=v3)[0]
    assert np.allclose(f3[20:-20], f0[17:-23], rtol=1e-5)
    # non-integer shifts, measured by cross-correlation
    for v in (-150.0, 100.0):
        fv = clean.model(3300.0, 0.0, rv=v)[0]
        expected = np.log10(1 + v / mock.C_KMS) / 1e-4
        assert _xcorr_shift(np.log(f0), np.log(fv)) == pytest.approx(expected, abs=0.15)


def _xcorr_shift(ref: np.ndarray, obs: np.ndarray, max_lag: int = 6, edge: int = 100) -> float:
    """Pixel shift of ``obs`` relative to ``ref``: cross-correlation peak, parabolic refinement."""
    a = ref[edge:-edge] - ref[edge:-edge].mean()
    lags = np.arange(-max_lag, max_lag + 1)
    cc = []
    for k in lags:
        b = obs[edge + k : obs.size - edge + k]
        cc.append(np.sum(a * (b - b.mean())))
    cc = np.asarray(cc)
    i = int(np.argmax(cc))
    return lags[i] + 0.5 * (cc[i - 1] - cc[i + 1]) / (cc[i - 1] - 2 * cc[i] + cc[i + 1])


def test_survey_noise_is_gaussian_about_the_noiseless_survey(lamost):
    noisy, truth = lamost.generate(64, start=1000)
    model, truth0 = lamost.generate(64, start=1000, noise=False)
    assert np.array_equal(truth["teff_true"], truth0["teff_true"])
    assert np.array_equal(noisy.ivar[~noisy.mask], model.ivar[~noisy.mask])
    pull = (noisy.flux - model.flux) * np.sqrt(model.ivar)
    ok = ~noisy.mask & (np.abs(pull) < 5)  # cosmic-ray spikes are > 5 sigma
    assert np.std(pull[ok]) == pytest.approx(1.0, abs=0.02)
    assert np.mean(pull[ok]) == pytest.approx(0.0, abs=0.01)
    assert np.sum(np.abs(pull[~noisy.mask]) > 5) == pytest.approx(np.sum(truth["n_cosmic"]), abs=3)


def test_drawn_rv_recorded_and_applied():
    ms = MockSurvey("lamost", seed=3, rv_sigma=40.0, rv_max=200.0)
    truth = ms.draw_truth(2000)
    rv = np.asarray(truth["rv_true"])
    assert np.abs(rv).max() <= 200.0
    assert np.std(rv) == pytest.approx(40.0, rel=0.1)


def test_halpha_emission_for_active_stars(clean):
    w = clean.wavelength
    f = clean.model(3000.0, 0.0, halpha_ew=[0.0, 5.0])
    ha = np.argmin(np.abs(w - mock.HALPHA_VACUUM))
    cont = np.median(f[:, (w > 6540) & (w < 6552)], axis=1)
    assert f[1, ha] / cont[1] > 1.5 > f[0, ha] / cont[0]
    # equivalent width recovered from the line flux
    win = (w > 6550) & (w < 6580)
    dlam = np.gradient(w)[win]
    ew = np.sum((f[1, win] - f[0, win]) * dlam) / f[0, ha]
    assert ew == pytest.approx(5.0, rel=0.1)
    # activity fraction rises toward late types
    truth = MockSurvey("lamost", seed=1, labels="uniform").draw_truth(4000)
    spt = np.asarray(truth["spt_true"])
    act = np.asarray(truth["active"])
    assert act[spt > 6].mean() > act[(spt > 3) & (spt < 5)].mean() > act[spt < 2].mean()
    assert np.all(np.asarray(truth["halpha_ew_true"])[~act] == 0)


def test_dead_pixels_and_cosmics():
    ms = MockSurvey("lamost", seed=2, bad_pixel_rate=0.01, cosmic_rate=5.0)
    spec, truth = ms.generate(30)
    assert np.array_equal(spec.mask, spec.ivar == 0)
    assert np.all(spec.flux[spec.mask] == 0)
    assert np.array_equal(spec.mask.sum(axis=1), truth["n_bad"])
    assert 0.005 < spec.mask.mean() < 0.015
    assert 2 < np.mean(truth["n_cosmic"]) < 8


def test_flux_in_arbitrary_units_with_continuum_shape(lamost):
    spec, _ = lamost.generate(50, noise=False)
    w = lamost.wavelength
    band = (w >= I_BAND[0]) & (w <= I_BAND[1])
    level = np.median(spec.flux[:, band], axis=1)
    assert np.all((level > 199) & (level < 5001))
    assert np.unique(np.round(level)).size > 40  # not normalised
    assert np.all(np.median(spec.flux[:, w < 4500], axis=1) < 0.5 * level)  # red M dwarf slope


# --------------------------------------------------------------------------- #
# label and SNR distributions
# --------------------------------------------------------------------------- #
def test_labels_follow_b20_within_domain(lamost):
    b20 = datasets.load("birky2020_table6_full")
    teff = np.asarray(b20["TEFF"], float)
    feh = np.asarray(b20["FE_H"], float)
    ok = (
        (teff > TEFF_RANGE[0])
        & (teff < TEFF_RANGE[1])
        & (feh > FEH_RANGE[0])
        & (feh < FEH_RANGE[1])
    )
    truth = lamost.draw_truth(20_000)
    t, f = np.asarray(truth["teff_true"]), np.asarray(truth["feh_true"])
    assert t.min() >= TEFF_RANGE[0] and t.max() <= TEFF_RANGE[1]
    assert f.min() >= FEH_RANGE[0] and f.max() <= FEH_RANGE[1]
    for q in (10, 50, 90):
        assert np.percentile(t, q) == pytest.approx(np.percentile(teff[ok], q), abs=20)
        assert np.percentile(f, q) == pytest.approx(np.percentile(feh[ok], q), abs=0.02)
    # the joint distribution: the Teff-[Fe/H] correlation is kept
    assert np.corrcoef(t, f)[0, 1] == pytest.approx(np.corrcoef(teff[ok], feh[ok])[0, 1], abs=0.03)
    assert np.allclose(truth["logg_true"], logg_from_teff(t))


def test_snr_distribution(lamost):
    snr = np.asarray(lamost.draw_truth(20_000)["snr_true"])
    assert np.median(snr) == pytest.approx(30.0, rel=0.05)
    assert snr.min() >= 5.0 and snr.max() <= 1000.0
    assert 0.003 < np.mean(snr > 200) < 0.03


# --------------------------------------------------------------------------- #
# API
# --------------------------------------------------------------------------- #
def test_outputs_are_spectra_with_truth_and_say_mock(lamost):
    spec, truth = lamost.generate(5)
    assert isinstance(spec, Spectra)
    assert spec.flux.shape == (5, lamost.n_pix) and spec.shared_grid
    for col in ("teff_true", "feh_true", "logg_true", "snr_true", "rv_true", "active"):
        assert col in spec.meta.colnames and col in truth.colnames
    assert truth["teff_true"].unit == "K"
    assert np.array_equal(spec.meta["snr"], truth["snr_true"])
    assert truth.meta["MOCK"] is True
    assert lamost.describe().startswith("MOCK")
    assert "MOCK" in mock.MOCK_CAPTION
    one = lamost.spectrum(3300.0, 0.0, snr=50.0)
    assert len(one) == 1 and one.meta["snr_true"][0] == 50.0


def test_invalid_inputs_raise(lamost):
    with pytest.raises(ValueError, match="teff"):
        lamost.spectrum(4200.0, 0.0)
    with pytest.raises(ValueError, match="feh"):
        lamost.model(3300.0, -2.5)
    with pytest.raises(ValueError, match="resolution"):
        MockSurvey("lamost", resolution=5000)
    with pytest.raises(ValueError, match="survey"):
        MockSurvey("apogee")
    with pytest.raises(ValueError, match="teff_range"):
        MockSurvey("lamost", teff_range=(2000.0, 3000.0))


# --------------------------------------------------------------------------- #
# the pipeline recovers the mock's truth
# --------------------------------------------------------------------------- #
def test_slam_trained_on_part_of_a_mock_recovers_held_out_truth():
    """Train SLAM on 240 mock spectra, label 80 held-out ones: Teff and [M/H] come back.

    High-SNR spectra (median 150) on a coarse 6147-8888 A grid of 300 pixels; labels
    uniform over 2900-3800 K and -1.0 to +0.4 dex. Tolerances are a few times the
    scatter measured when the test was written (Teff 36 K, [M/H] 0.026 dex; r = 0.990, 0.998).
    """
    from mdslam.flags import LabelFlag
    from mdslam.preprocess import log_lambda_grid, preprocess
    from mdslam.slam import SLAM

    def survey():
        return MockSurvey("lamost", seed=11, snr_median=150.0, snr_sigma=0.3, labels="uniform",
                          teff_range=(2900.0, 3800.0), feh_range=(-1.0, 0.4))

    grid = log_lambda_grid(6147.0, 8888.0, n=300)
    spec, truth = survey().generate(320)
    pp = preprocess(spec, grid=grid, progress=False)
    # determinism: the same seed gives the same spectra (bit for bit), so the same normalised
    # fluxes (to rounding: the continuum fit is vectorised over however many spectra it gets)
    raw = survey().generate(20, start=300)[0]
    assert np.array_equal(raw.flux, spec.flux[300:]) and np.array_equal(raw.ivar, spec.ivar[300:])
    again = preprocess(raw, grid=grid, progress=False)
    assert np.allclose(again.flux, pp.flux[300:], rtol=1e-10, atol=0)
    assert np.all(pp.meta["flag"] == 0)

    y = np.column_stack([truth["teff_true"], truth["feh_true"]])
    train, test = np.arange(240), np.arange(240, 320)
    model = SLAM(C=(10.0,), epsilon=(0.05,), gamma=(0.3, 1.0), cv=3, random_state=0)
    model.fit(pp.flux[train], y[train], pp.ivar[train], wavelength=grid, label_names=["teff", "fe_h"],
              label_units=["K", "dex"])
    tab = model.predict_table(pp[test])
    assert np.all(tab["flag"] & LabelFlag.FAILED == 0)
    d_teff = np.asarray(tab["teff"]) - y[test, 0]
    d_feh = np.asarray(tab["fe_h"]) - y[test, 1]
    assert abs(np.median(d_teff)) < 20 and np.std(d_teff) < 80
    assert abs(np.median(d_feh)) < 0.03 and np.std(d_feh) < 0.08
    # and the labels follow the truth over the whole range, not just its mean
    assert np.corrcoef(tab["teff"], y[test, 0])[0, 1] > 0.98
    assert np.corrcoef(tab["fe_h"], y[test, 1])[0, 1] > 0.95
