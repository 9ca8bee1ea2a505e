"""The parts of the SLAM estimator that are functions of arrays, each against hand arithmetic or numpy.

(:mod:`mdslam.slam.inputs`, :mod:`mdslam.slam.quality`, :mod:`mdslam.slam.cv`; the estimator
that calls them is tested in ``test_slam.py``.)
"""

from __future__ import annotations

import numpy as np
import pytest

from mdslam.flags import LabelFlag
from mdslam.slam import cv, inputs, quality


def test_weights_are_one_over_observed_plus_model_variance():
    flux = np.array([[1.0, 0.5, np.nan, 0.8], [1.0, 1.0, 1.0, 1.0]])
    ivar = np.array([[4.0, 0.0, 1.0, np.inf], [1.0, np.nan, 2.0, 1.0]])
    model_var = np.array([0.25, 0.25, 0.25, 0.5])
    usable = np.array([True, True, True, False])
    w = inputs.weights(flux, ivar, model_var, usable)
    # 1 / (1/4 + 1/4) = 2; ivar 0, NaN flux, NaN ivar and unusable pixels -> 0; ivar inf -> model only
    assert w[0].tolist() == [2.0, 0.0, 0.0, 0.0]
    assert w[1].tolist() == [1 / 1.25, 0.0, 1 / 0.75, 0.0]
    w0 = inputs.weights(flux, None, model_var, np.ones(4, bool))
    assert w0[1].tolist() == [4.0, 4.0, 4.0, 2.0] and w0[0, 2] == 0.0


def test_coerce_spectra_flags_ragged_rows_and_rejects_a_wrong_2d_array():
    good, short = np.ones(5), np.ones(4)
    flux, iv, bad = inputs.coerce_spectra([good, short, "x", good], None, 5)
    assert bad.tolist() == [False, True, True, False] and iv is None
    assert np.isnan(flux[1]).all() and (flux[[0, 3]] == 1).all()
    with pytest.raises(ValueError, match="4 pixels but the model grid has 5"):
        inputs.coerce_spectra(np.ones((3, 4)), None, 5)


def test_check_training_masks_bad_pixels_and_names_the_shape_problem():
    X = np.array([[1.0, np.nan], [2.0, 3.0]])
    flux, labels, good = inputs.check_training(X, [1.0, 2.0], np.array([[1.0, 1.0], [0.0, 1.0]]))
    assert good.tolist() == [[True, False], [False, True]] and flux.tolist() == [[1.0, 0.0], [0.0, 3.0]]
    assert labels.shape == (2, 1)
    with pytest.raises(ValueError, match="X has 2 spectra but y has 3 rows"):
        inputs.check_training(X, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="label_names/label_units must have 2 entries"):
        inputs.label_metadata(["teff"], None, 2)
    with pytest.raises(ValueError, match="C and gamma grids must be positive"):
        inputs.hyperparameter_grid([1.0], [0.1], [0.0])


def test_snr_is_the_median_of_flux_times_sqrt_ivar_over_good_pixels():
    flux = np.array([[1.0, 2.0, 3.0, 10.0], [1.0, 1.0, 1.0, 1.0]])
    ivar = np.array([[100.0, 100.0, 100.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    ok = np.ones_like(flux, bool)
    snr = quality.snr(flux, ok, ivar)
    assert snr[0] == 20.0 and np.isnan(snr[1])            # median(10, 20, 30); no good pixel
    assert np.isnan(quality.snr(flux, ok, None)).all()


def test_rchi2_input_and_domain_flags_by_hand():
    assert quality.rchi2(np.array([30.0, 5.0]), np.array([13, 2]), 3).tolist() == [3.0, 5.0]
    f = quality.input_flags(np.array([True, False, True]), np.array([10, 0, 3]), np.array([50.0, np.nan, 5.0]),
                            min_good=5.0, low_snr=10.0)
    assert f.tolist() == [0, LabelFlag.FAILED | LabelFlag.FEW_PIXELS, LabelFlag.FEW_PIXELS | LabelFlag.LOW_SNR]
    dom = quality.domain_array(np.array([[3000.0, 4000.0], [-1.0, 0.5]]), {"fe_h": (-0.6, 0.5)}, ["teff", "fe_h"])
    assert dom.tolist() == [[3000.0, 4000.0], [-0.6, 0.5]]
    d = quality.domain_flags(np.array([[3500.0, 0.0], [2900.0, -0.7], [np.nan, 0.0]]), dom)
    assert d.tolist() == [0, (LabelFlag.OUTSIDE_DOMAIN << 0) | (LabelFlag.OUTSIDE_DOMAIN << 1), 0]


def test_choose_hyperparameters_takes_each_pixels_lowest_cv_mse():
    rng = np.random.default_rng(0)
    sse = rng.uniform(1, 2, (2, 3, 2, 4))
    se = rng.uniform(1, 2, (2, 3, 2, 4))
    cnt = np.array([10.0, 10.0, 0.0, 5.0])
    Cs, es, gs = np.array([1.0, 10.0]), np.array([0.01, 0.1, 1.0]), np.array([0.1, 1.0])
    sse[1, 2, 0, 1] = 0.5                                   # the best point of pixel 1
    out = cv.choose_hyperparameters(sse, se, cnt, Cs, es, gs)
    assert (out["C_"][1], out["epsilon_"][1], out["gamma_"][1]) == (10.0, 1.0, 0.1)
    assert out["cv_mse_scaled_"][1] == 0.05 and out["cv_md_scaled_"][1] == se[1, 2, 0, 1] / 10
    for j in (0, 3):                                        # brute force over the grid
        i = np.unravel_index(np.argmin(sse[..., j]), sse.shape[:3])
        assert (out["C_"][j], out["epsilon_"][j], out["gamma_"][j]) == (Cs[i[0]], es[i[1]], gs[i[2]])
    assert out["pixel_usable_"].tolist() == [True, True, False, True]
    assert out["cv_mse_scaled_"][2] == np.inf and np.isnan(out["cv_md_scaled_"][2])
    assert out["cv_mse_grid_"].shape == (4, 2, 3, 2)


def test_snr_equals_numpys_nanmedian_bit_for_bit():
    """Random batches with masked pixels, zero ivar and odd and even counts of good pixels."""
    rng = np.random.default_rng(5)
    for _ in range(50):
        n, p = rng.integers(1, 30), rng.integers(1, 200)
        flux = rng.normal(1.0, 0.3, (n, p))
        ivar = rng.gamma(2.0, 500.0, (n, p)) * (rng.random((n, p)) > 0.1)
        ok = rng.random((n, p)) > rng.random()
        with np.errstate(invalid="ignore"):
            s = np.where(ok & (ivar > 0), np.abs(flux) * np.sqrt(ivar), np.nan)
        has = np.isfinite(s).any(axis=1)
        ref = np.full(n, np.nan)
        ref[has] = np.nanmedian(s[has], axis=1)
        assert np.array_equal(quality.snr(flux, ok, ivar), ref, equal_nan=True)


def test_pixel_groups_of_interleaved_gammas_and_the_float32_copy():
    """Pixels of two widths interleaved (fancy-indexed rows) and of one width (a view of the rows):
    the groups hold each pixel's coefficients; the float32 groups derived from the float64 ones
    equal those built directly."""
    from mdslam.slam import SLAM, forward

    rng = np.random.default_rng(2)
    dual = rng.normal(size=(6, 10)) * (rng.random((6, 10)) > 0.3)
    b = rng.normal(size=6)
    for gamma in (np.array([0.3, 1.0, 0.3, 1.0, 1.0, 0.3]), np.full(6, 0.5), np.array([1.0, 1.0, 1.0, 0.3, 0.3, 0.3])):
        groups = forward.pixel_groups(gamma, dual, b)
        assert sorted(np.concatenate([g[1] for g in groups]).tolist()) == list(range(6))
        for g, pix, coef, bb, sv in groups:
            assert np.all(gamma[pix] == g) and np.array_equal(bb, b[pix])
            full = dual[pix] if sv is None else dual[pix][:, sv]
            assert np.array_equal(coef, full.T) and coef.flags["C_CONTIGUOUS"]
        model = SLAM()
        model.gamma_, model.dual_coef_, model.intercept_ = gamma, dual, b
        model._groups()
        for (g1, p1, c1, b1, s1), (g2, p2, c2, b2, s2) in zip(model._groups(np.float32),
                                                              forward.pixel_groups(gamma, dual, b, np.float32),
                                                              strict=True):
            assert g1 == g2 and np.array_equal(p1, p2) and c1.dtype == c2.dtype == np.float32
            assert np.array_equal(c1, c2) and c1.flags["C_CONTIGUOUS"] and np.array_equal(b1, b2)
            assert (s1 is None and s2 is None) or np.array_equal(s1, s2)


def test_table_units_parse_as_a_column_would():
    from astropy.table import Column

    from mdslam.slam.table import _unit

    for text in ("K", "dex", "", "not_a_unit"):
        assert _unit(text) == Column([1.0], unit=text or None).unit
