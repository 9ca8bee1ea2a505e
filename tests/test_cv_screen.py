"""The screened CV grid search (``SLAM(cv_screen=...)``, :mod:`mdslam.slam.screen`).

References: scikit-learn's ``SVR`` (libsvm) cross-validated over the same standardised data,
grid and folds (the exact search's answer), and the exact search of ``SLAM`` itself
(``cv_screen=None``) for the points both solve.
"""

from __future__ import annotations

import numpy as np
import pytest
from _spectra import libsvm_cv_mse_grid, sigmoid_lines
from sklearn.model_selection import KFold

from mdslam.slam import SLAM, screen

GRID = {"C": (1.0, 10.0), "epsilon": (0.03, 0.3), "gamma": (0.03, 0.3, 3.0)}
SCREEN = {"keep": 3, "n_star": 100, "folds": 3}


@pytest.fixture(scope="module")
def data():
    """150 stars x 6 pixels of smooth sigmoid lines in 3 labels, SNR 100, standardised as SLAM does."""
    flux, labels = sigmoid_lines(150, 6, seed=3, coef_seed=5)
    X = (labels - labels.mean(0)) / labels.std(0)
    Y = (flux - flux.mean(0)) / flux.std(0)
    return flux, labels, X, Y


@pytest.fixture(scope="module")
def fits(data):
    flux, labels = data[:2]
    exact = SLAM(**GRID, cv=KFold(5), chi2_scale=1.0).fit(flux, labels)
    screened = SLAM(**GRID, cv=KFold(5), chi2_scale=1.0, cv_screen=SCREEN).fit(flux, labels)
    return exact, screened


@pytest.fixture(scope="module")
def fold_screened(data):
    """The screen whose proxy is the first fold of the full CV (its solves reused)."""
    flux, labels = data[:2]
    return SLAM(**GRID, cv=KFold(5), chi2_scale=1.0, cv_screen={"keep": 3, "first_folds": 1}).fit(flux, labels)


@pytest.fixture(scope="module")
def libsvm_mse(data):
    """libsvm's 5-fold CV-MSE of every pixel and grid point, (n_pix, n_C, n_epsilon, n_gamma)."""
    X, Y = data[2:]
    return libsvm_cv_mse_grid(X, Y, list(KFold(5).split(X)), GRID)


def test_screened_search_returns_the_exact_choice(fits, libsvm_mse):
    """Where libsvm's best point is clear (the second best >= 1 % worse; 4 of the 6 pixels) the
    screened choice is that point; on every pixel it is the exact search's; 3 of 12 points per
    pixel get the full CV."""
    exact, screened = fits
    flat = libsvm_mse.reshape(len(libsvm_mse), -1)
    two = np.sort(flat, axis=1)[:, :2]
    clear = two[:, 1] > 1.01 * two[:, 0]
    assert clear.sum() >= 4, "the test problem should have a clear best point on most pixels"
    best = np.array(np.unravel_index(flat.argmin(1), libsvm_mse.shape[1:])).T
    for k, name in enumerate(("C", "epsilon", "gamma")):
        assert np.array_equal(getattr(screened, name + "_")[clear], np.asarray(GRID[name])[best[clear, k]])
        assert np.array_equal(getattr(screened, name + "_"), getattr(exact, name + "_"))
    kept = np.isfinite(screened.cv_mse_grid_)
    assert np.all(kept.reshape(len(kept), -1).sum(1) == SCREEN["keep"])
    assert screened.solver_info_["cv_screened_fraction"] == pytest.approx(1 - 3 / 12)
    assert screened.solver_info_["cv_screen"] == {**screen.SCREEN_DEFAULTS, **SCREEN}
    # the kept points' full CV-MSE is the exact search's (both solve to libsvm's gap 1e-3)
    assert np.allclose(screened.cv_mse_grid_[kept], exact.cv_mse_grid_[kept], rtol=2e-3, atol=0)
    assert np.allclose(screened.dual_coef_, exact.dual_coef_, atol=1e-9)


def test_first_fold_screen_keeps_the_exact_choice_and_cv_mse(fits, fold_screened):
    """With the first fold as the proxy, every fold's solves of the kept points add up to the
    exact search's CV-MSE there, and the choice is the exact one; 12 + 4 x 3 of 5 x 12 solves made."""
    exact = fits[0]
    kept = np.isfinite(fold_screened.cv_mse_grid_)
    assert np.all(kept.reshape(len(kept), -1).sum(1) == 3)
    assert np.allclose(fold_screened.cv_mse_grid_[kept], exact.cv_mse_grid_[kept], rtol=2e-3, atol=0)
    for name in ("C_", "epsilon_", "gamma_"):
        assert np.array_equal(getattr(fold_screened, name), getattr(exact, name))
    assert fold_screened.solver_info_["cv_screened_fraction"] == pytest.approx(1 - (12 + 4 * 3) / 60)
    assert fold_screened.solver_info_["cv_n_unconverged"] == 0


def test_stage_two_solves_equal_libsvm_at_the_chosen_point(data, libsvm_mse):
    """The full CV of one (C, epsilon, gamma) per pixel, solved in one batch per (fold, gamma)
    with per-target C and epsilon, gives libsvm's CV-MSE there (both at KKT gap 1e-6)."""
    X, Y = data[2:]
    Cs, es, gs = (np.asarray(GRID[k]) for k in ("C", "epsilon", "gamma"))
    n_pix = Y.shape[1]
    alive = np.zeros((Cs.size, es.size, gs.size, n_pix), bool)
    pick = np.random.default_rng(0).integers(0, [Cs.size, es.size, gs.size], (n_pix, 3))
    pick[:2] = [[1, 0, 2], [1, 0, 1]]               # C = 10, the hardest corner, on two pixels
    alive[pick[:, 0], pick[:, 1], pick[:, 2], np.arange(n_pix)] = True
    folds = list(KFold(5).split(X))
    sse, _, cnt, info = screen.masked_search_cv(X, Y, np.ones_like(Y, bool), folds, Cs, es, gs, alive, 1e-6,
                                                False)
    got = (sse / cnt)[pick[:, 0], pick[:, 1], pick[:, 2], np.arange(n_pix)]
    want = libsvm_mse[np.arange(n_pix), pick[:, 0], pick[:, 1], pick[:, 2]]
    assert np.allclose(got, want, rtol=1e-4, atol=0)
    assert np.isnan(sse[~alive]).all()
    assert info["cv_n_unconverged"] == 0 and info["cv_max_kkt_gap"] <= 1e-6


def test_solves_above_tol_are_counted_per_pixel(data, monkeypatch):
    """A solve left above ``tol`` is counted on its own pixel, once per fold and kept point."""
    X, Y = data[2:]
    Cs, es, gs = (np.asarray(GRID[k]) for k in ("C", "epsilon", "gamma"))
    real, stall_pix = screen._cv_solver("admm"), 4

    def stalls_on_one_pixel(ke, Yb, C, eps, **kw):
        sol = real(ke, Yb, C, eps, **kw)
        sol.converged = sol.converged & ~np.isin(Yb[:, 0], Y[:, stall_pix])    # rows of that pixel
        return sol

    monkeypatch.setattr(screen, "_cv_solver", lambda name: stalls_on_one_pixel)
    alive = np.zeros((Cs.size, es.size, gs.size, Y.shape[1]), bool)
    alive[0, :, 1, :] = True                                                  # 2 points per pixel
    alive[1, 0, 2, :3] = True                                                 # and a third on 3 pixels
    folds = list(KFold(5).split(X))
    _, _, _, info = screen.masked_search_cv(X, Y, np.ones_like(Y, bool), folds, Cs, es, gs, alive, 1e-3, False)
    want = np.zeros(Y.shape[1], int)
    want[stall_pix] = 2 * len(folds)                 # 2 kept points x 5 folds, on that pixel alone
    assert np.array_equal(info["cv_unconverged_per_pixel"], want)
    assert info["cv_n_unconverged"] == want.sum()


def test_bad_cv_screen_is_a_one_line_error(data):
    flux, labels = data[:2]
    for bad, msg in ((0, "keep=0"), ({"folds": 1}, "folds=1"), ({"kep": 3}, "unknown key"), (2.5, "keep=2.5")):
        with pytest.raises(ValueError, match=msg):
            SLAM(**GRID, cv=KFold(5), cv_screen=bad).fit(flux, labels)
    for bad in (1.0, 0.5, float("nan"), "1.2", True):
        with pytest.raises(ValueError, match="prune="):
            SLAM(**GRID, cv=KFold(5), cv_screen={"keep": 3, "prune": bad}).fit(flux, labels)
    with pytest.raises(ValueError, match="cv_prune None"):
        SLAM(**GRID, cv=KFold(5), cv_screen=3, cv_prune=1.5).fit(flux, labels)


def test_a_gamma_group_without_support_vectors_is_modelled(fits):
    """A large chosen epsilon can leave every pixel of a gamma group without support vectors
    (as on 64 px of the realistic grid); the model flux there is the intercept, its Jacobian 0."""
    import copy

    model = copy.deepcopy(fits[0])
    g0 = model.gamma_[0]
    flat = model.gamma_ == g0
    model.dual_coef_[flat] = 0.0
    model._reset_cache()
    th = np.zeros((3, model.X_train_.shape[1]))
    F, J = model._model_scaled(th, jacobian=True)
    assert np.allclose(F[:, flat], model.intercept_[flat])
    assert np.all(J[:, flat] == 0) and np.any(J[:, ~flat] != 0)


def _kept_points(Cs, es, gs, n_pix, seed=1, keep=5):
    """``keep`` distinct random grid points per pixel, (n_C, n_epsilon, n_gamma, n_pix) bool."""
    rng = np.random.default_rng(seed)
    alive = np.zeros((Cs.size * es.size * gs.size, n_pix), bool)
    for p in range(n_pix):
        alive[rng.choice(alive.shape[0], keep, replace=False), p] = True
    return alive.reshape(Cs.size, es.size, gs.size, n_pix)


def test_prune_inf_is_the_unpruned_search(data):
    """``prune=inf`` drops no kept point: the same sums, bit for bit, and the same solves."""
    X, Y = data[2:]
    Cs, es, gs = (np.asarray(GRID[k]) for k in ("C", "epsilon", "gamma"))
    alive = _kept_points(Cs, es, gs, Y.shape[1])
    folds = list(KFold(5).split(X))
    good = np.ones_like(Y, bool)
    plain = screen.masked_search_cv(X, Y, good, folds, Cs, es, gs, alive, 1e-3, False)
    inf = screen.masked_search_cv(X, Y, good, folds, Cs, es, gs, alive, 1e-3, False, prune=np.inf)
    for a, b in zip(plain[:3], inf[:3], strict=True):
        assert np.array_equal(a, b, equal_nan=True)
    assert inf[3]["cv_n_solves"] == plain[3]["cv_n_solves"] == alive.sum() * len(folds)


def test_prune_drops_the_kept_points_above_f_times_the_best_after_two_folds(data):
    """After two folds the kept points above f x the pixel's best partial CV-MSE (computed here
    from a separate run of those two folds) get no more folds; the rest keep their full CV-MSE."""
    X, Y = data[2:]
    Cs, es, gs = (np.asarray(GRID[k]) for k in ("C", "epsilon", "gamma"))
    alive = _kept_points(Cs, es, gs, Y.shape[1])
    folds = list(KFold(5).split(X))
    good = np.ones_like(Y, bool)
    f = 1.05
    part, _, cnt2, _ = screen.masked_search_cv(X, Y, good, folds[:2], Cs, es, gs, alive, 1e-3, False)
    want = np.zeros_like(alive)
    for p in range(Y.shape[1]):
        mse = part[..., p] / cnt2[p]
        want[..., p] = alive[..., p] & (mse <= f * np.nanmin(mse))
    assert 0 < want.sum() < alive.sum(), "the test factor should drop some kept points, not all"
    full = screen.masked_search_cv(X, Y, good, folds, Cs, es, gs, alive, 1e-3, False)[0]
    sse, _, _, info = screen.masked_search_cv(X, Y, good, folds, Cs, es, gs, alive, 1e-3, False, prune=f)
    assert np.array_equal(np.isfinite(sse), want)
    assert np.allclose(sse[want], full[want], rtol=2e-3, atol=0)
    assert info["cv_n_solves"] == 2 * alive.sum() + 3 * want.sum()
    assert info["cv_n_unconverged"] == 0


def test_first_fold_screen_with_prune_counts_the_proxy_folds(fits, data):
    """With the first fold as the proxy and ``prune_after=2``, the pruning follows the second fold
    (the proxy's fold counts); the choice is the exact search's best among the points that survive."""
    exact = fits[0]
    flux, labels = data[:2]
    spec = {"keep": 4, "first_folds": 1, "prune": 1.02}
    model = SLAM(**GRID, cv=KFold(5), chi2_scale=1.0, cv_screen=spec).fit(flux, labels)
    kept = np.isfinite(model.cv_mse_grid_)
    n_pix = kept.shape[0]
    assert kept.sum() < 4 * n_pix and np.all(kept.reshape(n_pix, -1).sum(1) >= 1)
    assert np.allclose(model.cv_mse_grid_[kept], exact.cv_mse_grid_[kept], rtol=2e-3, atol=0)
    best = np.where(kept, exact.cv_mse_grid_, np.inf).reshape(n_pix, -1).argmin(1)
    idx = np.unravel_index(best, kept.shape[1:])
    for k, name in enumerate(("C", "epsilon", "gamma")):
        assert np.array_equal(getattr(model, name + "_"), np.asarray(GRID[name])[idx[k]])
    made = 12 * n_pix + 4 * n_pix + 3 * kept.sum()          # proxy fold, second fold of the kept, 3 more
    assert model.solver_info_["cv_screened_fraction"] == pytest.approx(1 - made / (12 * n_pix * 5))
    assert model.solver_info_["cv_screen"]["prune"] == 1.02


def test_admm_iter_moves_the_smo_finish_not_the_answer(data, libsvm_mse, monkeypatch):
    """``admm_iter`` (the ``admm_max_iter`` of "admm-smo" in stage 2) changes how the kept points
    are solved, not what: with 20 the solves are handed to SMO early, every one ends at ``tol``
    (1e-6), and the CV-MSE is libsvm's as with the default 3,000."""
    pytest.importorskip("numba")
    X, Y = data[2:]
    Cs, es, gs = (np.asarray(GRID[k]) for k in ("C", "epsilon", "gamma"))
    alive = _kept_points(Cs, es, gs, Y.shape[1], seed=2, keep=3)
    folds = list(KFold(5).split(X))
    good = np.ones_like(Y, bool)
    real, seen = screen._cv_solver("admm-smo"), []

    def recorded(*a, **kw):
        seen.append(kw.get("admm_max_iter"))
        return real(*a, **kw)

    monkeypatch.setattr(screen, "_cv_solver", lambda name: recorded)
    runs = [screen.masked_search_cv(X, Y, good, folds, Cs, es, gs, alive, 1e-6, False, solver="admm-smo",
                                    admm_iter=it) for it in (None, 20)]
    assert set(seen) == {None, 20}
    want = np.moveaxis(libsvm_mse, 0, -1)[alive]
    for sse, _, cnt, info in runs:
        assert info["cv_n_unconverged"] == 0 and info["cv_max_kkt_gap"] <= 1e-6
        assert np.allclose((sse / cnt)[alive], want, rtol=1e-4, atol=0)
    assert screen.check_screen({"admm_iter": 300})["admm_iter"] == 300
    with pytest.raises(ValueError, match="admm_iter=0"):
        screen.check_screen({"admm_iter": 0})


def test_admm_iter_reaches_the_proxy_and_keeps_the_choice(fits, data, monkeypatch):
    """``admm_iter`` caps "admm-smo" in the proxy (100-star folds of 66-67 stars) and in the full CV
    (folds of 120): the fit makes the exact search's choices, its kept points' CV-MSE the exact one."""
    pytest.importorskip("numba")
    exact = fits[0]
    flux, labels = data[:2]
    real, sizes = screen._cv_solver("admm-smo"), set()

    def recorded(ke, Yb, C, eps, **kw):
        sizes.add((Yb.shape[1], kw.get("admm_max_iter")))
        return real(ke, Yb, C, eps, **kw)

    monkeypatch.setattr(screen, "_cv_solver", lambda name: recorded)
    model = SLAM(**GRID, cv=KFold(5), chi2_scale=1.0, solver="admm-smo",
                 cv_screen={**SCREEN, "admm_iter": 20}).fit(flux, labels)
    assert {n for n, it in sizes if it == 20} >= {66, 67, 120} and {it for _, it in sizes} == {20}
    kept = np.isfinite(model.cv_mse_grid_)
    assert np.allclose(model.cv_mse_grid_[kept], exact.cv_mse_grid_[kept], rtol=2e-3, atol=0)
    for name in ("C_", "epsilon_", "gamma_"):
        assert np.array_equal(getattr(model, name), getattr(exact, name))
    assert model.solver_info_["cv_n_unconverged"] == 0
