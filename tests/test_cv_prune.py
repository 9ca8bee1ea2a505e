"""Pixel-wise pruning of hopeless grid points in SLAM's CV grid search (``SLAM(cv_prune=f)``).

The reference is the exact grid search (``cv_prune=None``, every point in every fold) and,
for which points are pruned, scikit-learn's ``SVR`` (libsvm) on the same standardised data
and folds: after the first two folds, a pixel's point is pruned when its CV-MSE over those
folds exceeds ``f`` times the pixel's best.
"""

from __future__ import annotations

import numpy as np
import pytest
from _spectra import libsvm_cv_mse_grid, sigmoid_lines
from sklearn.model_selection import KFold

from mdslam.slam import SLAM

GRID = {"C": (1.0, 10.0), "epsilon": (0.03, 0.1), "gamma": (0.03, 0.3, 3.0)}
FACTOR = 1.2


@pytest.fixture(scope="module")
def data():
    """120 stars x 8 pixels of smooth sigmoid lines in 3 labels, SNR 100."""
    return sigmoid_lines(120, 8, seed=11, coef_seed=7)


@pytest.fixture(scope="module")
def fits(data):
    flux, labels = data
    exact = SLAM(**GRID, cv=KFold(5), chi2_scale=1.0).fit(flux, labels)
    pruned = SLAM(**GRID, cv=KFold(5), chi2_scale=1.0, cv_prune=FACTOR).fit(flux, labels)
    return exact, pruned


def _libsvm_partial_mse(flux, labels, n_folds_done):
    """CV-MSE (standardised flux) of every pixel and grid point over the first folds, by libsvm."""
    X = (labels - labels.mean(0)) / labels.std(0)
    Y = (flux - flux.mean(0)) / flux.std(0)
    folds = list(KFold(5).split(X))[:n_folds_done]
    return libsvm_cv_mse_grid(X, Y, folds, GRID)


def test_pruned_points_are_those_libsvm_puts_above_the_factor(data, fits):
    """NaN entries of ``cv_mse_grid_`` are exactly the points whose two-fold CV-MSE (libsvm) is
    above ``FACTOR`` x the pixel's best (points within 0.1 % of the threshold not judged)."""
    exact, pruned = fits
    mse2 = _libsvm_partial_mse(*data, n_folds_done=2)
    thr = FACTOR * mse2.reshape(len(mse2), -1).min(1)[:, None, None, None]
    clear = np.abs(mse2 / thr - 1) > 1e-3
    expect_pruned = mse2 > thr
    got_pruned = np.isnan(pruned.cv_mse_grid_)
    assert expect_pruned[clear].any() and (~expect_pruned[clear]).any(), "the test should prune some points, not all"
    assert np.array_equal(got_pruned[clear], expect_pruned[clear])
    # the saving: pruned points skip 3 of 5 folds
    n_total = pruned.cv_mse_grid_.size * 5
    assert pruned.solver_info_["cv_pruned_fraction"] == pytest.approx(got_pruned.sum() * 3 / n_total)
    assert "cv_pruned_fraction" not in exact.solver_info_


def test_pruning_keeps_the_exact_cv_mse_and_choice(fits):
    """Points still solved have the exact search's CV-MSE (to the solver's tolerance: the float32
    iterations of a batch of other rows round differently, and each solve stops anywhere below
    libsvm's KKT gap 1e-3); here every pixel keeps its exact choice."""
    exact, pruned = fits
    alive = ~np.isnan(pruned.cv_mse_grid_)
    assert np.allclose(pruned.cv_mse_grid_[alive], exact.cv_mse_grid_[alive], rtol=1e-3, atol=0)
    for k in ("C_", "epsilon_", "gamma_"):
        assert np.array_equal(getattr(pruned, k), getattr(exact, k))
    assert np.allclose(pruned.cv_mse_, exact.cv_mse_, rtol=1e-3)
    assert np.allclose(pruned.dual_coef_, exact.dual_coef_, atol=1e-9)
    # what was pruned was worse than the choice in the exact search too
    best = exact.cv_mse_scaled_[:, None, None, None]
    assert np.all(exact.cv_mse_grid_[~alive] > np.broadcast_to(best, alive.shape)[~alive])


def test_bad_cv_prune_is_a_one_line_error(data):
    flux, labels = data
    for bad in (1.0, 0.5, True, float("nan")):
        with pytest.raises(ValueError, match="cv_prune="):
            SLAM(**GRID, cv=3, cv_prune=bad).fit(flux[:30], labels[:30])
