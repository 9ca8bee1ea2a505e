"""The papers' formulas pinned to values worked out by hand (arithmetic in the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from mdslam import datasets, selection, validation
from mdslam import relations as rel


# --------------------------------------------------------------------------- #
# Qiu 2025 eqs. 6-8
# --------------------------------------------------------------------------- #
def test_power_law_by_hand():
    # 3 * 4**0.5 = 3 * 2 = 6
    assert rel.power_law(4.0, 3.0, 0.5) == pytest.approx(6.0)
    np.testing.assert_allclose(rel.power_law([1.0, 9.0], 2.0, -0.5), [2.0, 2.0 / 3.0])


def test_floor_law_by_hand():
    # sqrt(0.1^2 + (3/10)^2) = sqrt(0.01 + 0.09) = sqrt(0.1) = 0.316228; at SNR -> inf: the floor
    assert rel.floor_law(10.0, 3.0, 0.1) == pytest.approx(0.316228, abs=1e-6)
    np.testing.assert_allclose(rel.floor_law([1e9, 3.0], 3.0, 0.1), [0.1, np.sqrt(0.01 + 1.0)])
    s = rel.floor_law(np.linspace(5, 500, 200), 40.0, 0.05)
    assert np.all(np.diff(s) <= 0)  # non-increasing with SNR


def test_snr_uncertainty_published_coefficients():
    # eq. 6 at SNR = 16: 0.34 * 16**-0.25 = 0.34 / 2 = 0.17 dex
    assert rel.snr_uncertainty(16.0, "feh") == pytest.approx(0.17)
    # eq. 7 at SNR = 100: 388.88 * 100**-0.47 = 388.88 * 10**-0.94 = 388.88 * 0.114815 = 44.649 K
    assert rel.snr_uncertainty(100.0, "teff") == pytest.approx(44.6494, rel=1e-5)
    # eq. 8 at SNR = 1: 0.13 * 1 = 0.13 dex
    assert rel.snr_uncertainty(1.0, "logg") == pytest.approx(0.13)
    # aliases and array shape
    out = rel.snr_uncertainty(np.array([[16.0, 16.0]]), "[Fe/H]")
    assert out.shape == (1, 2)
    with pytest.raises(ValueError, match="unknown label"):
        rel.snr_uncertainty(10.0, "vsini")


def test_snr_uncertainty_quoted_values_are_at_snr_10():
    # Q25 sec. 4.2 quotes 0.19 dex, 132 K, 0.1 dex "at SNR = 15"; those are the SNR = 10 values:
    # 0.34 * 10**-0.25 = 0.34 * 0.56234 = 0.1912; 388.88 * 10**-0.47 = 388.88 * 0.33884 = 131.77;
    # 0.13 * 10**-0.13 = 0.13 * 0.74131 = 0.0964
    assert rel.snr_uncertainty(10, "feh") == pytest.approx(0.1912, abs=5e-5)
    assert rel.snr_uncertainty(10, "teff") == pytest.approx(131.77, abs=5e-3)
    assert rel.snr_uncertainty(10, "logg") == pytest.approx(0.0964, abs=5e-5)
    # at SNR = 15 the Teff law gives 388.88 * 15**-0.47 = 109.3 K, not 132 K
    assert rel.snr_uncertainty(15, "teff") < 110


# --------------------------------------------------------------------------- #
# eq. 9
# --------------------------------------------------------------------------- #
def test_logg_from_mass_radius():
    # the Sun: 4.438 + 0 - 0
    assert rel.logg_from_mass_radius(1.0, 1.0) == pytest.approx(4.438)
    # M = R = 0.5: 4.438 + log10(0.5) - 2 log10(0.5) = 4.438 + 0.30103 = 4.73903
    assert rel.logg_from_mass_radius(0.5, 0.5) == pytest.approx(4.73903, abs=1e-5)


# --------------------------------------------------------------------------- #
# eq. 10
# --------------------------------------------------------------------------- #
def test_aspcap_correction_by_hand():
    # Teff = 3500 K, [Fe/H] = 0: x = 3.5, y = 0
    # -0.427 * 12.25 + 2.767 * 3.5 - 4.405 = -5.23075 + 9.6845 - 4.405 = 0.04875
    assert rel.aspcap_feh_correction(3500.0, 0.0) == pytest.approx(0.04875, abs=1e-12)
    # [Fe/H] = -0.5 adds -0.158 * 0.25 + 0.431 * 3.5 * (-0.5) - 2.156 * (-0.5)
    #                 = -0.0395 - 0.75425 + 1.078 = 0.28425  ->  0.04875 + 0.28425 = 0.333
    assert rel.aspcap_feh_correction(3500.0, -0.5) == pytest.approx(0.333, abs=1e-12)
    # calibrated = -0.5 + 0.333 = -0.167
    assert rel.calibrate_aspcap_feh(3500.0, -0.5) == pytest.approx(-0.167, abs=1e-12)
    np.testing.assert_allclose(rel.aspcap_feh_correction([3500.0, 3500.0], [0.0, -0.5]), [0.04875, 0.333])


def test_fit_aspcap_correction_recovers_the_published_coefficients():
    rng = np.random.default_rng(1)
    teff = rng.uniform(3200, 4000, 400)
    feh = rng.uniform(-1.0, 0.3, 400)
    ref = rel.calibrate_aspcap_feh(teff, feh)
    coeffs, cov = rel.fit_aspcap_correction(teff, feh, ref)
    np.testing.assert_allclose(coeffs, rel.ASPCAP_CORRECTION_COEFFS, atol=1e-8)
    assert cov.shape == (6, 6)
    # with 0.05 dex noise the refit lies within 4 sigma of the truth for every coefficient
    noisy = ref + rng.normal(0, 0.05, teff.size)
    coeffs, cov = rel.fit_aspcap_correction(teff, feh, noisy, sigma=np.full(teff.size, 0.05))
    pull = (coeffs - rel.ASPCAP_CORRECTION_COEFFS) / np.sqrt(np.diag(cov))
    assert np.all(np.abs(pull) < 4)
    assert rel.aspcap_feh_correction(3500, 0.0, coeffs) == pytest.approx(0.04875, abs=0.03)
    with pytest.raises(ValueError, match="more than 6"):
        rel.fit_aspcap_correction(teff[:6], feh[:6], ref[:6])


def test_fit_aspcap_correction_on_b20(data_mirror):
    # eq. 10's form refitted on real data: B20's FGK-calibrated Cannon [Fe/H] against the
    # APOGEE [M/H] of the same 14,087 stars (APOGEE SNR > 20, both labels present)
    b20 = datasets.load("birky2020_table6_full")
    teff, mh = selection.column(b20, "TEFF_APOGEE"), selection.column(b20, "M_H_APOGEE")
    feh = selection.column(b20, "FE_H")
    ok = np.isfinite(teff) & np.isfinite(mh) & np.isfinite(feh) & (selection.column(b20, "SNR") > 20)
    assert ok.sum() == 14087
    coeffs, cov = rel.fit_aspcap_correction(teff[ok], mh[ok], feh[ok])
    assert np.all(np.isfinite(np.sqrt(np.diag(cov))))
    before = validation.compare(feh[ok], mh[ok])
    after = validation.compare(feh[ok], rel.calibrate_aspcap_feh(teff[ok], mh[ok], coeffs))
    # B20 is 0.18 dex more metal-rich than APOGEE (scatter 0.26); after the refit -0.03 +- 0.19
    assert (before.median, before.std) == pytest.approx((0.178, 0.258), abs=1e-3)
    assert (after.median, after.std) == pytest.approx((-0.030, 0.189), abs=1e-3)


# --------------------------------------------------------------------------- #
# eq. 11 (Niu et al. 2023)
# --------------------------------------------------------------------------- #
def test_niu2023_by_hand():
    # at the break: 0.358 * 1 - 0.4 = -0.042
    assert rel.niu2023_correction(5281.4) == pytest.approx(-0.042, abs=1e-12)
    # 4000 K: r = 4000/5281.4 = 0.757375, r**1.254 = exp(1.254 * -0.277897) = exp(-0.348483) = 0.705758
    #         0.358 * 0.705758 - 0.4 = -0.147339
    assert rel.niu2023_correction(4000.0, outside="extrapolate") == pytest.approx(-0.147339, abs=1e-6)
    # 7000 K: r = 1.325406, r**-2.404 = exp(-2.404 * 0.281719) = exp(-0.677252) = 0.508011
    #         0.358 * 0.508011 - 0.4 = -0.218132
    assert rel.niu2023_correction(7000.0, outside="extrapolate") == pytest.approx(-0.218132, abs=1e-6)
    # 4000 and 7000 K are the (open) limits of validity: NaN there and beyond by default
    out = rel.niu2023_correction([3900.0, 4000.0, 4500.0, 7000.0, 7500.0])
    assert np.isnan(out[[0, 1, 3, 4]]).all() and np.isfinite(out[2])


def test_niu2023_sign_convention():
    # corrected = feh - delta: a 4500 K star measured at 0.0 is raised; a 5281.4 K star by 0.042
    # delta(4500): r = 0.852047, r**1.254 = exp(1.254 * -0.160106) = exp(-0.200773) = 0.818090
    #              0.358 * 0.818090 - 0.4 = -0.107124
    assert rel.niu2023_corrected_feh(0.0, 4500.0) == pytest.approx(0.107124, abs=1e-6)
    assert rel.niu2023_corrected_feh(-0.3, 5281.4) == pytest.approx(-0.258, abs=1e-12)
    # the correction is largest away from the peak: cool and hot stars are raised most
    d = rel.niu2023_correction(np.array([4200.0, 5281.4, 6800.0]))
    assert d[1] == d.max() and np.all(d < 0)


# --------------------------------------------------------------------------- #
# eqs. 12-14 (Mann et al.)
# --------------------------------------------------------------------------- #
def test_mann2015_teff_by_hand():
    # X = 2.5, J-H = 0.6:
    # 3.172 - 2.475*2.5 + 1.082*6.25 - 0.2231*15.625 + 0.01738*39.0625 + 0.08776*0.6 + 0.04355*0.36
    # = 3.172 - 6.1875 + 6.7625 - 3.4859375 + 0.67890625 + 0.052656 + 0.015678 = 1.00830275
    # Teff = 3500 * 1.00830275 = 3529.0596 K
    assert rel.mann2015_teff(2.5, 0.6) == pytest.approx(3529.059625, abs=1e-6)
    # the printed typo (X^2 three times) would give 3500*(3.172-6.1875+6.25*(1.082-0.2231+0.01738)
    #   + 0.052656 + 0.015678) = 3500 * 2.5300 -> 8855 K, not an M dwarf
    assert rel.mann2015_teff(2.5, 0.6) < 4000


def test_mann2015_radius_by_hand():
    # M_Ks = 6: 1.9515 - 0.352*6 + 0.0168*36 = 1.9515 - 2.112 + 0.6048 = 0.4443 Rsun
    assert rel.mann2015_radius(6.0) == pytest.approx(0.4443, abs=1e-12)
    # M_Ks = 5: 1.9515 - 1.76 + 0.42 = 0.6115
    np.testing.assert_allclose(rel.mann2015_radius([5.0, 6.0]), [0.6115, 0.4443])


def test_mann2019_mass_by_hand():
    # M_Ks = 7.5 (the zero point): log M = a0 = -0.642 -> M = 0.228034
    assert rel.mann2019_mass(7.5) == pytest.approx(0.228034, abs=1e-6)
    # M_Ks = 6.5 (dm = -1): -0.642 + 0.208 - 8.43e-4 - 7.87e-3 + 1.42e-4 + 2.13e-4 = -0.442358
    #   -> M = 10**-0.442358 = 0.361112
    assert rel.mann2019_mass(6.5) == pytest.approx(0.361112, abs=1e-6)
    # M_Ks = 8.5 (dm = +1): -0.642 - 0.208 - 8.43e-4 + 7.87e-3 + 1.42e-4 - 2.13e-4 = -0.843044
    #   -> M = 0.143534
    assert rel.mann2019_mass(8.5) == pytest.approx(0.143534, abs=1e-6)


def test_logg_mann_chain():
    # M_Ks = 6.5: R = 1.9515 - 2.288 + 0.7098 = 0.3733; M = 0.361112
    # log g = 4.438 - 0.442358 - 2 log10(0.3733) = 4.438 - 0.442358 + 0.855884 = 4.851526
    logg = rel.logg_from_mass_radius(rel.mann2019_mass(6.5), rel.mann2015_radius(6.5))
    assert logg == pytest.approx(4.851526, abs=1e-6)


# --------------------------------------------------------------------------- #
# photometry and extinction
# --------------------------------------------------------------------------- #
def test_absolute_magnitude():
    # 10 + 5 log10(100) - 10 = 10
    assert rel.absolute_magnitude(10.0, 100.0) == pytest.approx(10.0)
    # 12 + 5 log10(10) - 10 - 0.2 = 6.8
    assert rel.absolute_magnitude(12.0, 10.0, 0.2) == pytest.approx(6.8)
    out = rel.absolute_magnitude([12.0, 12.0], [-1.0, 0.0])
    assert np.isnan(out).all()


def test_av_and_wang_chen_ratios():
    # A_V = 3.1 * 0.1 = 0.31
    assert rel.av_from_ebv(0.1) == pytest.approx(0.31)
    ext = rel.gaia_extinction(1.0, method="wang_chen2019")
    assert (ext["G"], ext["BP"], ext["RP"]) == pytest.approx((0.789, 1.002, 0.589))


def test_babusiaux_coefficients_by_hand():
    # C = 1, A0 = 0: k_G = 0.9761 - 0.1704 + 0.0086 + 0.0011 = 0.8154
    #                k_BP = 1.1517 - 0.0871 - 0.0333 + 0.0173 = 1.0486
    #                k_RP = 0.6104 - 0.0170 - 0.0026 - 0.0017 = 0.5891
    k = rel.gaia_extinction_coefficients(1.0, 0.0)
    assert (k["G"], k["BP"], k["RP"]) == pytest.approx((0.8154, 1.0486, 0.5891), abs=1e-12)
    # A0 = 0.1 adds c5*0.1 + c6*0.01 + c7*1*0.1: k_G = 0.8154 - 0.00438 + 0.000013 + 0.00099 = 0.812023
    assert rel.gaia_extinction_coefficients(1.0, 0.1)["G"] == pytest.approx(0.812023, abs=1e-12)


def test_babusiaux_iterates_to_the_intrinsic_colour():
    # intrinsic C0 = 1, A0 = 0.1: k_BP = 1.0486 - 0.0023 + 0.000006 + 0.00043 = 1.046736,
    # k_RP = 0.5891 - 0.00078 + 0.0000005 + 0.00006 = 0.5883805 -> E(BP-RP) = 0.1 * 0.4583555
    observed = 1.0 + 0.04583555
    ext = rel.gaia_extinction(0.1, bp_rp=observed)
    assert ext["G"] == pytest.approx(0.0812023, abs=1e-6)
    assert ext["BP"] - ext["RP"] == pytest.approx(0.04583555, abs=1e-6)
    with pytest.raises(ValueError, match="bp_rp"):
        rel.gaia_extinction(0.1)
    with pytest.raises(ValueError, match="method"):
        rel.gaia_extinction(0.1, 1.0, method="ccm89")
