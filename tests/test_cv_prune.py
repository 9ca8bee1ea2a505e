"""Pixel-wise pruning of hopeless grid points in SLAM's CV grid search (``SLAM(cv_prune=f)``).

The reference is the exact grid search (``cv_prune=None``, every point in every fold) and,
for which points are pruned, scikit-learn's ``SVR`` (libsvm) on the same standardised data
and folds: after the first two folds, a pixel's point is pruned when its CV-MSE over those
folds exceeds ``f`` times the pixel's best.  With a schedule ``(f_1, f_2, ...)`` the same test
runs after every fold ``k``, against the best of the points still solved.
"""

from __future__ import annotations

import numpy as np
import pytest
from _spectra import libsvm_cv_mse_grid, sigmoid_lines
from sklearn.model_selection import KFold

from mdslam.slam import SLAM, harmonic_prune
from mdslam.slam.training import check_prune, prune_schedule, replay_prune

GRID = {"C": (1.0, 10.0), "epsilon": (0.03, 0.1), "gamma": (0.03, 0.3, 3.0)}
FACTOR = 1.2
SCHEDULE = (1.3, 1.1)


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


@pytest.fixture(scope="module")
def scheduled(data):
    flux, labels = data
    return SLAM(**GRID, cv=KFold(5), chi2_scale=1.0, cv_prune=SCHEDULE).fit(flux, labels)


def test_schedule_prunes_after_each_fold_as_libsvm_says(data, scheduled):
    """After fold 1, points above 1.3 x the one-fold best (libsvm) go; after fold 2, of those left,
    points above 1.1 x the best of the survivors go (points within 0.1 % of a threshold not judged)."""
    mse1 = _libsvm_partial_mse(*data, n_folds_done=1)
    mse2 = _libsvm_partial_mse(*data, n_folds_done=2)
    flat = (len(mse1), -1)
    thr1 = SCHEDULE[0] * mse1.reshape(flat).min(1)[:, None, None, None]
    alive1 = mse1 <= thr1
    best2 = np.where(alive1, mse2, np.inf).reshape(flat).min(1)[:, None, None, None]
    thr2 = SCHEDULE[1] * best2
    expect = ~alive1 | (mse2 > thr2)
    clear = (np.abs(mse1 / thr1 - 1) > 1e-3) & (~alive1 | (np.abs(mse2 / thr2 - 1) > 1e-3))
    got = np.isnan(scheduled.cv_mse_grid_)
    assert (~alive1[clear]).any() and (alive1 & expect)[clear].any(), "both steps should prune something"
    assert np.array_equal(got[clear], expect[clear])
    # saved solves: a point dropped after fold 1 skips 4 folds, after fold 2 three
    n_skip = (~alive1 & got).sum() * 4 + (alive1 & got).sum() * 3
    assert scheduled.solver_info_["cv_pruned_fraction"] == pytest.approx(n_skip / (got.size * 5))


def test_schedule_keeps_the_exact_choice_here(fits, scheduled):
    exact, _ = fits
    alive = ~np.isnan(scheduled.cv_mse_grid_)
    assert np.allclose(scheduled.cv_mse_grid_[alive], exact.cv_mse_grid_[alive], rtol=1e-3, atol=0)
    for k in ("C_", "epsilon_", "gamma_"):
        assert np.array_equal(getattr(scheduled, k), getattr(exact, k))


def test_harmonic_schedule_by_hand():
    assert harmonic_prune(5) == pytest.approx((1.2, 1.1, 1 + 0.2 / 3, 1.05))
    assert harmonic_prune(3, c=0.5) == pytest.approx((1.5, 1.25))
    assert harmonic_prune(1) == ()
    with pytest.raises(ValueError, match="c="):
        harmonic_prune(5, c=0)


def test_prune_schedule_steps():
    assert prune_schedule(None, 5) == {}
    assert prune_schedule(1.2, 5) == {2: 1.2}
    assert prune_schedule(1.2, 2) == {}                       # two folds: nothing left to skip
    assert prune_schedule((1.5, float("inf"), 1.1), 5) == {1: 1.5, 3: 1.1}
    assert prune_schedule((1.5, 1.4, 1.3, 1.2, 1.1), 3) == {1: 1.5, 2: 1.4}


def test_bad_schedules_are_one_line_errors(data):
    flux, labels = data
    for bad in ((), (1.2, 1.0), (1.2, float("nan")), "harmonic", (1.2, True)):
        with pytest.raises(ValueError, match="cv_prune="):
            check_prune(bad)
    with pytest.raises(ValueError, match="cv_prune="):
        SLAM(**GRID, cv=3, cv_prune=(1.2, 0.9)).fit(flux[:30], labels[:30])
    assert check_prune([2, 1.5]) == (2.0, 1.5)
    assert check_prune((1.3, float("inf"))) == (1.3, float("inf"))


def test_replay_prune_by_hand():
    """Two points of one pixel, three folds, per-fold sums A = 1, 1, 1 and B = 1.5, 3, 3: after fold 1
    B / A = 1.5 <= 1.6 stays; after fold 2 4.5 / 2 > 1.2 goes, so 5 of the 6 solves are made."""
    sse = np.array([[1.0, 1.5], [1.0, 3.0], [1.0, 3.0]]).reshape(3, 1, 1, 2, 1)
    alive, solved = replay_prune(sse, (1.6, 1.2))
    assert alive.ravel().tolist() == [True, False] and solved == pytest.approx(5 / 6)
    alive, solved = replay_prune(sse, 1.2, prune_after=1)       # a factor: one step, here after fold 1
    assert alive.ravel().tolist() == [True, False] and solved == pytest.approx(4 / 6)
    # the test counts are the pixel's, the same for both points: they do not change the ratio
    alive, _ = replay_prune(sse, (1.6, 1.2), cnt_per_fold=np.array([[160.0], [150.0], [170.0]]))
    assert alive.ravel().tolist() == [True, False]
