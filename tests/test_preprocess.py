"""Rest frame, rebinning, normalisation, masks and the block pipeline."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.table import Table

from mdslam import datasets
from mdslam import preprocess as pp
from mdslam import spectra as sp
from mdslam.flags import SpectrumFlag
from mdslam.spectra import Spectra

TIO_BANDS = [(7050.0, 7150.0), (7600.0, 7700.0), (8430.0, 8460.0)]
# band-free flux peaks of M0-M4 dwarfs (7020-7050 A is the pseudo-continuum point
# of the CaH2/CaH3/TiO5 indices)
PEAKS = [(7020.0, 7050.0), (7540.0, 7580.0), (8150.0, 8180.0), (8700.0, 8800.0)]


@pytest.fixture(scope="module")
def lamost(data_mirror) -> Spectra:
    return datasets.load("lamost_dr7_spectra")


@pytest.fixture(scope="module")
def lamost_pre(lamost) -> tuple[Spectra, np.ndarray]:
    return pp.preprocess(lamost, progress=False, return_continuum=True)


def _window_median(spec: Spectra, lo: float, hi: float) -> np.ndarray:
    sel = (spec.wavelength >= lo) & (spec.wavelength <= hi)
    vals = np.where(spec.mask[:, sel], np.nan, spec.flux[:, sel])
    with warnings.catch_warnings():  # a star may have every pixel of a window masked
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(vals, axis=1)


def _irregular_spectrum(seed: int = 1, n: int = 3000, start: float = 6000.0):
    rng = np.random.default_rng(seed)
    wave = start + np.cumsum(rng.uniform(0.5, 1.5, n))
    flux = 1.0 + 0.3 * np.sin(wave / 37.0) + rng.normal(0, 0.05, n)
    ivar = rng.uniform(50, 200, n)
    return wave, flux, ivar


# --------------------------------------------------------------------------- #
# rest frame and grid
# --------------------------------------------------------------------------- #
def test_log_lambda_grid_default():
    g = pp.log_lambda_grid()
    assert g.size == 1596 and g[0] == pytest.approx(6147) and g[-1] == pytest.approx(8888)
    dlog = np.diff(np.log10(g))
    np.testing.assert_allclose(dlog, dlog[0], rtol=1e-9)
    assert dlog[0] == pytest.approx(1.0e-4, rel=0.01)  # LAMOST's native sampling


def test_rest_frame_redshift_and_velocity():
    w = np.array([6000.0, 7000.0])
    np.testing.assert_allclose(pp.to_rest_frame(w, z=1e-3), w / 1.001)
    v = 30.0
    rel = pp.to_rest_frame(w, rv=v)
    np.testing.assert_allclose(rel, w / np.sqrt((1 + v / pp.C_KMS) / (1 - v / pp.C_KMS)))
    np.testing.assert_allclose(rel, w / (1 + v / pp.C_KMS), rtol=1e-8)  # classical limit
    per = pp.to_rest_frame(w, rv=np.array([0.0, v, np.nan]))
    assert per.shape == (3, 2)
    np.testing.assert_allclose(per[0], w)
    np.testing.assert_allclose(per[2], w)  # NaN velocity: no shift
    with pytest.raises(ValueError, match="not both"):
        pp.to_rest_frame(w, rv=1.0, z=1e-3)


# --------------------------------------------------------------------------- #
# rebinning
# --------------------------------------------------------------------------- #
def test_rebin_matches_overlap_integrals_and_conserves_flux():
    wave, flux, ivar = _irregular_spectrum()
    new = pp.log_lambda_grid(6300, 8500, 1000)
    nf, ni, nm = pp.rebin((wave, flux, ivar), new)
    assert not nm.any()
    # brute-force overlap matrix
    e, en = pp.pixel_edges(wave), pp.pixel_edges(new)
    o = np.clip(np.minimum(en[1:, None], e[None, 1:]) - np.maximum(en[:-1, None], e[None, :-1]),
                0, None)
    np.testing.assert_allclose(nf, o @ flux / o.sum(1), rtol=1e-10)
    np.testing.assert_allclose(1 / ni, (o**2) @ (1 / ivar) / o.sum(1) ** 2, rtol=1e-10)
    # the integral of the flux density over the grid's span is preserved
    inside = np.clip(np.minimum(en[-1], e[1:]) - np.maximum(en[0], e[:-1]), 0, None)
    assert np.sum(nf * np.diff(en)) == pytest.approx(np.sum(flux * inside), rel=1e-12)
    # a constant stays constant
    cf, _, _ = pp.rebin((wave, np.full_like(flux, 3.5), ivar), new)
    np.testing.assert_allclose(cf, 3.5, rtol=1e-12)


def test_rebin_ivar_propagation_on_white_noise():
    rng = np.random.default_rng(7)
    wave, _, _ = _irregular_spectrum(seed=2)
    sigma = 0.5 + 0.5 * rng.random(wave.size)
    n_real = 3000
    noise = rng.normal(0.0, 1.0, (n_real, wave.size)) * sigma
    ivar = np.broadcast_to(1 / sigma**2, noise.shape)
    new = pp.log_lambda_grid(6200, 8700, 800)
    nf, ni, nm = pp.rebin((wave, noise, ivar), new)
    assert not nm.any()
    ratio = nf.var(axis=0) / (1 / ni[0])
    assert ratio.mean() == pytest.approx(1.0, abs=0.01)
    assert np.all(np.abs(ratio - 1) < 0.15)  # ~2.6% sampling error per pixel


def test_rebin_per_spectrum_grids_equal_single_rebins():
    wave, flux, ivar = _irregular_spectrum()
    lengths = [3000, 2500, 2990]
    w2 = np.full((3, 3100), np.nan)
    f2 = np.full((3, 3100), np.nan)
    i2 = np.zeros((3, 3100))
    for r, n in enumerate(lengths):
        w2[r, :n], f2[r, :n], i2[r, :n] = wave[:n], flux[:n], ivar[:n]
    new = pp.log_lambda_grid(6100, 9000, 1200)
    bf, bi, bm = pp.rebin((w2, f2, i2), new)
    for r, n in enumerate(lengths):
        f, i, m = pp.rebin((wave[:n], flux[:n], ivar[:n]), new)
        np.testing.assert_array_equal(m, bm[r])
        np.testing.assert_allclose(f[~m], bf[r][~m], rtol=1e-12)
        np.testing.assert_allclose(i, bi[r], rtol=1e-12)


def test_rebin_coverage_bad_pixels_and_no_overlap():
    wave, flux, ivar = _irregular_spectrum()  # ~6000-8990 A
    mask = np.zeros(wave.size, bool)
    mask[1000:1040] = True  # a ~40 A hole of bad pixels
    new = pp.log_lambda_grid(5500, 9500, 1500)
    nf, ni, nm = pp.rebin((wave, flux, ivar, mask), new)
    outside = (new < wave[0] - 2) | (new > wave[-1] + 2)
    assert np.all(nm[outside]) and np.all(ni[outside] == 0)
    hole = (new > wave[1002]) & (new < wave[1037])
    assert hole.sum() > 5 and np.all(nm[hole]) and np.all(ni[hole] == 0)
    inside = (new > wave[10]) & (new < wave[-10]) & ~hole
    assert np.mean(nm[inside]) < 0.01
    far = pp.log_lambda_grid(9500, 10000, 50)
    with pytest.raises(pp.PreprocessError,
                       match=r"range 60\d\d\.\d-89\d\d\.\d A does not overlap the grid 9500"):
        pp.rebin((wave, flux, ivar), far)
    spec = Spectra(wave, flux[None], ivar[None], np.zeros((1, wave.size), bool))
    out = pp.rebin(spec, far)
    assert out.meta["flag"][0] == SpectrumFlag.NO_OVERLAP and "does not overlap" in out.meta[
        "flag_reason"][0]
    with pytest.raises(pp.PreprocessError):
        pp.rebin(spec, far, on_error="raise")


def test_rebin_real_lamost_onto_common_grid(lamost):
    g = pp.log_lambda_grid()
    out = pp.rebin(lamost, g)
    assert out.shared_grid and out.flux.shape == (54, 1596)
    assert np.all(out.good)
    assert np.median((~out.mask).mean(axis=1)) > 0.99
    # flux conserved against the native integral over the grid span, spectrum 0
    e = pp.pixel_edges(lamost.wave(0))
    en = pp.pixel_edges(g)
    n = e.size - 1
    good = ~lamost.mask[0, :n]
    if np.all(good[(e[1:] > en[0]) & (e[:-1] < en[-1])]):
        inside = np.clip(np.minimum(en[-1], e[1:]) - np.maximum(en[0], e[:-1]), 0, None)
        native = np.sum(lamost.flux[0, :n] * inside)
        assert np.sum(out.flux[0] * np.diff(en)) == pytest.approx(native, rel=1e-9)


# --------------------------------------------------------------------------- #
# normalisation
# --------------------------------------------------------------------------- #
def test_normalize_synthetic_recovers_continuum_and_band_depths():
    rng = np.random.default_rng(11)
    g = pp.log_lambda_grid()
    x = (g - g.mean()) / np.ptp(g)
    cont = 1000 * (1 + 0.4 * x - 0.3 * x**2)
    bands = [(6700.0, 0.3), (7120.0, 0.4), (7700.0, 0.25), (8450.0, 0.2)]
    profile = np.ones_like(g)
    for c, depth in bands:
        profile *= 1 - depth * np.exp(-0.5 * ((g - c) / 30.0) ** 2)
    sigma = cont * profile / 100.0  # SNR 100
    flux = cont * profile + rng.normal(0, sigma)
    ivar = 1 / sigma**2
    nf, ni, c = pp.normalize(g, flux, ivar)
    free = np.ones_like(g, bool)
    for b, _ in bands:
        free &= np.abs(g - b) > 150
    assert np.median(np.abs(c[free] / cont[free] - 1)) < 0.01
    assert np.max(np.abs(c / cont - 1)) < 0.05
    for b, depth in bands:
        k = np.argmin(np.abs(g - b))
        assert np.median(nf[k - 2:k + 3]) == pytest.approx(1 - depth, abs=0.05)
    np.testing.assert_allclose(ni, ivar * c**2)


def test_normalize_real_lamost_mdwarfs_pseudocontinuum(lamost_pre):
    out, cont = lamost_pre
    sub = np.char.startswith(np.asarray(out.meta["subclass"], str), "M")
    m = out[sub]
    assert len(m) >= 45
    assert np.all(np.isfinite(cont[sub]) & (cont[sub] > 0))
    for lo, hi in PEAKS:  # band-free peaks: ~1
        assert np.nanmedian(_window_median(m, lo, hi)) == pytest.approx(1.0, abs=0.05), (lo, hi)
    depth = {b: _window_median(m, *b) for b in TIO_BANDS}
    assert np.nanmedian(depth[TIO_BANDS[0]]) < 0.85
    assert np.nanmedian(depth[TIO_BANDS[1]]) < 0.9
    assert np.nanmedian(depth[TIO_BANDS[2]]) < 0.97
    # star by star, the 7050-7150 TiO band lies below the 7020-7050 peak
    assert np.mean(depth[TIO_BANDS[0]] < _window_median(m, 7020, 7050)) > 0.95


def test_normalize_is_not_biased_by_noise(lamost):
    """The same high-SNR spectra degraded to SNR 15 normalise to the same level."""
    g = pp.log_lambda_grid()
    hi = pp.rebin(lamost[np.asarray(lamost.meta["snr"]) > 300], g)
    assert len(hi) >= 5
    ref = pp.preprocess(hi, g, progress=False)
    noisy = hi.copy()
    sigma = np.abs(noisy.flux) / 15.0
    noisy.flux = noisy.flux + np.random.default_rng(5).normal(0, 1, sigma.shape) * sigma
    noisy.ivar = np.where(noisy.mask, 0, 1 / sigma**2)
    out = pp.preprocess(noisy, g, progress=False)
    both = ~(out.mask | ref.mask)
    shift = [np.median(out.flux[k, both[k]] - ref.flux[k, both[k]]) for k in range(len(hi))]
    assert np.abs(np.median(shift)) < 0.01


def test_normalize_boss_example(data_mirror):
    boss = datasets.load("boss_mdwarf_example")
    out = pp.preprocess(boss, progress=False)
    assert out.good[0]
    for b in TIO_BANDS[:2]:
        assert _window_median(out, *b)[0] < 0.9
    assert _window_median(out, 8700, 8800)[0] == pytest.approx(1.0, abs=0.05)


def test_normalize_per_spectrum_grids_row_by_row(lamost):
    few = lamost[:2]
    nf, ni, c = pp.normalize(few.wavelength, few.flux, few.ivar, few.mask)
    assert nf.shape == few.flux.shape
    n0 = few.wave(0).size
    assert np.all(np.isnan(c[0, n0:])) and np.all(np.isfinite(c[0, :n0]))
    one, _, c1 = pp.normalize(few.wave(0), few.flux[0, :n0], few.ivar[0, :n0], few.mask[0, :n0])
    np.testing.assert_allclose(c1, c[0, :n0])


# --------------------------------------------------------------------------- #
# masks
# --------------------------------------------------------------------------- #
def test_masks():
    g = pp.log_lambda_grid()
    ha = pp.mask_halpha(g)
    assert np.all(np.abs(g[ha] - 6564.61) <= 10) and ha.sum() == 13  # 1.5 A pixels
    assert pp.mask_halpha(np.array([6564.6, 6580.0]), width=10).tolist() == [True, False]
    tel = pp.mask_tellurics(g)
    assert tel[np.argmin(np.abs(g - 7605))] and not tel[np.argmin(np.abs(g - 7500))]
    bad = pp.mask_bad_pixels(np.array([1.0, np.nan, 1.0, 1.0, 1.0]),
                             np.array([1.0, 1.0, 0.0, 1.0, 1.0]),
                             andmask=np.array([0, 0, 0, 4, 0]))
    assert bad.tolist() == [False, True, True, True, False]


# --------------------------------------------------------------------------- #
# the block pipeline
# --------------------------------------------------------------------------- #
def test_preprocess_real_lamost(lamost_pre):
    out, _ = lamost_pre
    assert out.flux.shape == (54, 1596) and np.all(out.good)
    assert np.all(np.isfinite(out.flux))
    ha = pp.mask_halpha(out.wavelength)
    assert np.all(out.mask[:, ha]) and np.all(out.ivar[:, ha] == 0)
    assert np.all(out.ivar[out.mask] == 0)
    assert np.median(out.meta["good_fraction"]) > 0.95
    finite_z = np.isfinite(np.asarray(out.meta["z"], float))
    np.testing.assert_allclose(out.meta["z_applied"][finite_z], out.meta["z"][finite_z])
    assert np.all(out.meta["z_applied"][~finite_z] == 0)


def test_preprocess_shifts_to_rest_frame():
    g = pp.log_lambda_grid()
    z = 3e-4  # 90 km/s, ~1.3 pixels
    obs = np.geomspace(6000, 9000, 4000)
    rest_line = 7500.0
    flux = 1 - 0.5 * np.exp(-0.5 * ((obs / (1 + z) - rest_line) / 2.0) ** 2)
    spec = Spectra(obs, flux[None], np.full((1, obs.size), 1e4), np.zeros((1, obs.size), bool),
                   Table({"id": ["line"], "z": [z]}))
    for kw, expect in (({}, rest_line), ({"rv": 0.0}, rest_line * (1 + z))):
        out = pp.preprocess(spec, g, progress=False, mask_halpha=False, **kw)
        near = np.abs(g - 7500) < 15
        depth = 1 - out.flux[0, near]
        centroid = np.sum(g[near] * depth) / np.sum(depth)
        assert centroid == pytest.approx(expect, abs=0.15)


def test_preprocess_flags_bad_spectra_and_carries_them(tmp_path, lamost, data_mirror):
    paths = datasets.fetch("lamost_dr7_spectra")[:3]
    junk = tmp_path / "junk.fits"
    junk.write_text("not fits")
    batch = sp.read_lamost([paths[0], junk, paths[1], paths[2]])
    far = Spectra(np.linspace(9200, 10000, 300), np.ones((1, 300)), np.ones((1, 300)),
                  np.zeros((1, 300), bool), Table({"id": ["far"]}))
    batch = sp.concatenate([batch, far])
    batch.meta["snr"][2] = 3.0
    out = pp.preprocess(batch, progress=False, min_snr=5, tellurics=True, chunk_size=2)
    flags = list(out.meta["flag"])
    assert flags == [0, SpectrumFlag.READ_ERROR, SpectrumFlag.LOW_SNR, 0, SpectrumFlag.NO_OVERLAP]
    assert "9200.0-10000.0 A does not overlap" in out.meta["flag_reason"][4]
    for k in (1, 2, 4):
        assert np.all(out.ivar[k] == 0) and np.all(out.mask[k])
    assert np.all(out.flux[1] == 1.0)  # unreadable: placeholder at the continuum level
    for k, ref in ((0, 0), (3, 2)):
        assert out.meta["id"][k] == lamost.meta["id"][ref]
        assert out.meta["good_fraction"][k] > 0.8
    # tellurics masked in the observed frame
    a_band = np.abs(out.wavelength - 7607) < 8
    assert np.all(out.mask[0, a_band])
    # chunking and threads do not change the result
    ref = pp.preprocess(batch, progress=False, min_snr=5, tellurics=True, chunk_size=500)
    par = pp.preprocess(batch, progress=False, min_snr=5, tellurics=True, chunk_size=1,
                        n_jobs=2)
    for other in (ref, par):
        np.testing.assert_allclose(other.flux, out.flux, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(other.mask, out.mask)
        assert list(other.meta["flag"]) == flags


def test_preprocess_throughput_smoke(lamost):
    """Many copies of one real spectrum go through in one vectorised pass."""
    big = lamost[np.full(400, 5)]
    big.meta["z"] = np.random.default_rng(0).normal(0, 1e-4, len(big))
    out = pp.preprocess(big, progress=True, chunk_size=200)
    assert np.all(out.good)
    ref = pp.preprocess(lamost[5], rv=0.0, progress=False)
    # small velocity shifts change the normalised spectrum by much less than its noise
    diff = np.nanmedian(np.abs(out.flux[:, ~ref.mask[0]] - ref.flux[0, ~ref.mask[0]]))
    assert diff < 0.02
