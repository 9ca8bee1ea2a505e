"""H-alpha equivalent widths against lines of known equivalent width."""

import numpy as np
import pytest

from mdslam import activity
from mdslam.constants import H_ALPHA_VACUUM

WAVE = np.arange(6450.0, 6700.0, 0.5)          # 0.5 A pixels


def gauss_line(wave, ew, centre=H_ALPHA_VACUUM, sigma=2.0):
    """Normalised Gaussian profile with integral ``ew`` [A] (emission positive)."""
    return ew * np.exp(-0.5 * ((wave - centre) / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)


@pytest.mark.parametrize("ew", [3.0, 0.5, -0.4])
def test_flat_continuum_recovers_known_ew(ew):
    flux = 2.5 * (1.0 + gauss_line(WAVE, ew))     # continuum 2.5, EW in A
    r = activity.halpha_ew(WAVE, flux)
    # the +-7 A window holds all but 2 * Phi(-3.5) = 5e-4 of a sigma = 2 A Gaussian
    assert r.ew[0] == pytest.approx(ew, rel=2e-3)
    assert r.continuum[0] == pytest.approx(2.5)
    assert bool(r.active[0]) == (ew > activity.ACTIVE_EW_MIN)


def test_sloped_continuum_is_removed():
    cont = 1.0 + 0.002 * (WAVE - H_ALPHA_VACUUM)  # 10% slope across the windows
    flux = cont * (1.0 + gauss_line(WAVE, 2.0))
    r = activity.halpha_ew(WAVE, flux)
    assert r.ew[0] == pytest.approx(2.0, rel=5e-3)
    assert r.continuum[0] == pytest.approx(1.0, rel=1e-3)


def test_uncertainty_matches_scatter_of_noisy_realisations():
    rng = np.random.default_rng(1)
    sig = 0.05
    flux0 = 1.0 + gauss_line(WAVE, 1.0)
    ews = []
    for _ in range(400):
        ews.append(activity.halpha_ew(WAVE, flux0 + rng.normal(0, sig, WAVE.size),
                                      np.full(WAVE.size, 1 / sig**2)).ew[0])
    r = activity.halpha_ew(WAVE, flux0, np.full(WAVE.size, 1 / sig**2))
    # line noise sqrt(29 pixels) * 0.5 A * 0.05 = 0.13 A; continuum noise adds ~2%
    assert np.std(ews) == pytest.approx(r.ew_err[0], rel=0.15)
    assert np.mean(ews) == pytest.approx(1.0, abs=0.03)
    # 1 A > 0.75 A but only ~7 sigma: active; a 0.9 A line with sigma 0.5 noise is not
    assert r.active[0]
    weak = activity.halpha_ew(WAVE, 1.0 + gauss_line(WAVE, 0.9), np.full(WAVE.size, 4.0))
    assert weak.ew_err[0] > 0.3 and not weak.active[0]


def test_batch_and_bad_pixels():
    flux = np.vstack([1.0 + gauss_line(WAVE, 2.0), 1.0 + gauss_line(WAVE, 0.2)])
    ivar = np.ones_like(flux)
    ivar[0, WAVE <= 6550] = 0.0                   # blue continuum lost for the first star
    r = activity.halpha_ew(WAVE, flux, ivar)
    assert np.isnan(r.ew[0]) and not r.active[0]
    assert r.ew[1] == pytest.approx(0.2, rel=5e-3)
    t = activity.halpha_table(WAVE, flux, ivar, ids=["a", "b"])
    assert list(t["id"]) == ["a", "b"] and str(t["ew_halpha"].unit) == "Angstrom"


def test_windows_are_west2011():
    assert activity.HALPHA_LINE == pytest.approx((6557.61, 6571.61))


def test_window_outside_grid_is_a_clear_error():
    with pytest.raises(ValueError, match="outside the wavelength grid"):
        activity.halpha_ew(np.arange(7000.0, 8000.0), np.ones(1000))
