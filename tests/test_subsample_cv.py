"""Hyperparameters from a CV on a random subsample of the training stars (``SLAM(cv_subsample=m)``).

References: the draw is numpy's ``default_rng(seed).choice`` without replacement; the CV-MSE
of every grid point is scikit-learn's ``SVR`` (libsvm) on the same standardised data, the
subsample's stars and shuffled ``KFold(5, random_state=seed)`` folds drawn on them; the final
fit is libsvm's ``SVR`` on *all* training stars at each pixel's chosen (C, epsilon, gamma).
"""

from __future__ import annotations

import numpy as np
import pytest
from _spectra import libsvm_cv_mse_grid, sigmoid_lines
from sklearn.model_selection import KFold
from sklearn.svm import SVR

from mdslam.slam import SLAM
from mdslam.slam.training import cv_rows

GRID = {"C": (1.0, 10.0), "epsilon": (0.03, 0.1), "gamma": (0.1, 1.0)}
N, M, SEED = 150, 70, 3


@pytest.fixture(scope="module")
def data():
    """150 stars x 6 pixels of smooth sigmoid lines in 3 labels, SNR 100."""
    return sigmoid_lines(N, 6, seed=21, coef_seed=8)


@pytest.fixture(scope="module")
def sub_model(data):
    flux, labels = data
    return SLAM(**GRID, cv=5, random_state=SEED, chi2_scale=1.0, cv_subsample=M).fit(flux, labels)


def _standardised(flux, labels):
    return (labels - labels.mean(0)) / labels.std(0), (flux - flux.mean(0)) / flux.std(0)


def test_draw_is_seeded_sorted_and_numpys():
    """The CV stars are ``sort(default_rng(seed).choice(n, m, replace=False))``: same seed, same stars."""
    rows = cv_rows(1000, 200, 5)
    assert np.array_equal(rows, np.sort(np.random.default_rng(5).choice(1000, 200, replace=False)))
    assert np.array_equal(rows, cv_rows(1000, 200, 5))
    assert not np.array_equal(rows, cv_rows(1000, 200, 6))
    assert np.array_equal(cv_rows(50, None, 5), np.arange(50)) and np.array_equal(cv_rows(50, 80, 5), np.arange(50))


def test_subsample_of_all_stars_is_the_plain_fit_bit_for_bit(data):
    """``cv_subsample >= n`` draws every star: the model equals the default fit exactly."""
    flux, labels = data
    plain = SLAM(**GRID, cv=5, random_state=SEED, chi2_scale=1.0).fit(flux[:60], labels[:60])
    same = SLAM(**GRID, cv=5, random_state=SEED, chi2_scale=1.0, cv_subsample=60).fit(flux[:60], labels[:60])
    for attr in ("C_", "epsilon_", "gamma_", "cv_mse_grid_", "cv_mse_", "dual_coef_", "intercept_", "quick_flux_"):
        assert np.array_equal(getattr(plain, attr), getattr(same, attr)), attr
    assert plain.solver_info_ == same.solver_info_ and same.solver_info_["cv_n_stars"] == 60


def test_choices_are_libsvm_cv_on_the_subsample(data, sub_model):
    """Per pixel, the CV-MSE of every grid point equals libsvm's on the subsample's folds (rel. 2e-3,
    both solvers stop at a KKT gap; measured 5e-4) and the chosen point is libsvm's best."""
    flux, labels = data
    X, Y = _standardised(flux, labels)
    rows = np.sort(np.random.default_rng(SEED).choice(N, M, replace=False))
    X, Y = X[rows], Y[rows]
    folds = list(KFold(5, shuffle=True, random_state=SEED).split(X))
    ref = libsvm_cv_mse_grid(X, Y, folds, GRID)
    assert np.allclose(sub_model.cv_mse_grid_, ref, rtol=2e-3, atol=0)
    best = np.unravel_index(ref.reshape(len(ref), -1).argmin(1), (2, 2, 2))
    assert np.array_equal(sub_model.C_, np.asarray(GRID["C"])[best[0]])
    assert np.array_equal(sub_model.epsilon_, np.asarray(GRID["epsilon"])[best[1]])
    assert np.array_equal(sub_model.gamma_, np.asarray(GRID["gamma"])[best[2]])
    assert sub_model.solver_info_["cv_n_stars"] == M and sub_model.solver_info_["cv_subsample_seed"] == SEED


def test_final_fit_uses_every_star(data, sub_model):
    """The model is libsvm's SVR on all 150 stars at the chosen (C, epsilon, gamma): forward model
    within 1e-4 (standardised flux) at new labels, support vectors outside the subsample."""
    flux, labels = data
    X, Y = _standardised(flux, labels)
    new = np.random.default_rng(1).uniform(-1.2, 1.2, (40, 3))
    Xn = (new - labels.mean(0)) / labels.std(0)
    ref = np.column_stack([SVR(C=sub_model.C_[j], epsilon=sub_model.epsilon_[j], gamma=sub_model.gamma_[j],
                               tol=1e-9).fit(X, Y[:, j]).predict(Xn) for j in range(Y.shape[1])])
    got = (sub_model.predict_flux(new) - sub_model.flux_mean_) / sub_model.flux_scale_
    assert np.max(np.abs(got - ref)) < 1e-4
    outside = np.setdiff1d(np.arange(N), cv_rows(N, M, SEED))
    assert sub_model.n_train_ == N and np.any(sub_model.dual_coef_[:, outside] != 0)


@pytest.fixture(scope="module")
def ny_model(data):
    flux, labels = data
    return SLAM(**GRID, cv=5, random_state=SEED, chi2_scale=1.0, cv_subsample=M, kernel_rank=40).fit(flux, labels)


def test_subsample_cv_uses_the_exact_kernel_whatever_kernel_rank(sub_model, ny_model):
    """With ``kernel_rank`` the subsample's CV is the exact-kernel one (same CV-MSE grid, bit for bit)."""
    assert np.array_equal(ny_model.cv_mse_grid_, sub_model.cv_mse_grid_)
    assert np.count_nonzero(ny_model.dual_coef_[0]) <= 40            # final fits: the Nystrom landmarks


def test_newton_final_fits_solve_the_same_low_rank_problem(data, ny_model):
    """``solver="newton"``: the final fits on all stars reach libsvm's tolerance on the same Nystrom kernel
    as the ADMM final fits (same CV, bit for bit), so the two forward models at new labels agree within
    a few tol (standardised flux, 5e-3; both stop at KKT gap 1e-3) and within the Nystrom path's 2 % of
    sqrt(CV-MSE) bound of each other."""
    flux, labels = data
    nt = SLAM(**GRID, cv=5, random_state=SEED, chi2_scale=1.0, cv_subsample=M, kernel_rank=40,
              solver="newton").fit(flux, labels)
    assert np.array_equal(nt.cv_mse_grid_, ny_model.cv_mse_grid_) and nt.solver_info_["refit_n_above_tol"] == 0
    new = np.random.default_rng(1).uniform(-1.2, 1.2, (40, 3))
    d = (nt.predict_flux(new) - ny_model.predict_flux(new)) / ny_model.flux_scale_
    assert np.max(np.abs(d)) < 5e-3
    assert np.all(np.sqrt(np.mean(d**2, axis=0)) <= 0.02 * np.sqrt(ny_model.cv_mse_scaled_))


def test_sparse_model_evaluates_its_support_stars_only(ny_model, monkeypatch):
    """A Nystrom model's forward model runs over its landmarks only and equals the dense kernel
    expansion over all 150 stars (by hand with numpy) to 1e-12, its label derivatives the dense path's."""
    from mdslam.slam import forward

    groups = ny_model._groups()
    assert all(sv is not None and sv.size <= 2 * 40 for *_, sv in groups)
    new = np.random.default_rng(2).uniform(-1.2, 1.2, (30, 3))
    Th = (new - ny_model.label_mean_) / ny_model.label_scale_
    d2 = ((Th[:, None, :] - ny_model.X_train_[None]) ** 2).sum(-1)
    dense = np.exp(-d2[None] * ny_model.gamma_[:, None, None])                  # (n_pix, 30, 150)
    ref = np.einsum("pmi,pi->mp", dense, ny_model.dual_coef_) + ny_model.intercept_
    F, J = ny_model._model_scaled(Th, jacobian=True)
    assert np.max(np.abs(F - ref)) < 1e-12
    monkeypatch.setattr(forward, "SPARSE_SUPPORT", 0.0)
    ny_model._reset_cache()
    assert all(sv is None for *_, sv in ny_model._groups())
    F0, J0 = ny_model._model_scaled(Th, jacobian=True)
    ny_model._reset_cache()
    assert np.allclose(F, F0, rtol=0, atol=1e-12) and np.allclose(J, J0, rtol=0, atol=1e-12)


def test_subsample_is_recorded_in_the_model_file(sub_model, tmp_path):
    sub_model.save(tmp_path / "m.npz")
    back = SLAM.load(tmp_path / "m.npz")
    assert back.cv_subsample == M and back.random_state == SEED
    assert back.solver_info_["cv_n_stars"] == M and back.solver_info_["cv_subsample_seed"] == SEED


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "100"])
def test_bad_cv_subsample_is_a_one_line_error(data, bad):
    flux, labels = data
    with pytest.raises(ValueError, match="cv_subsample="):
        SLAM(**GRID, cv=3, cv_subsample=bad).fit(flux[:30], labels[:30])


def test_explicit_folds_with_a_subsample_are_refused(data):
    flux, labels = data
    folds = list(KFold(3).split(flux[:30]))
    with pytest.raises(ValueError, match="cv_subsample with explicit"):
        SLAM(**GRID, cv=folds, cv_subsample=20).fit(flux[:30], labels[:30])
