"""Tests of SLAM's optimiser and posterior (mdslam.slam.lm, mdslam.slam.posterior) against independent references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares

from mdslam.slam import lm, posterior


def test_batched_lm_reaches_scipy_least_squares_optimum(decay):
    """Same weighted problems, same optimum as scipy.optimize.least_squares (to 1e-6), same covariance."""
    _decay = decay.model
    x, truth, sigma, y, w = decay.problem(0, 6, 40)
    w[2, ::5] = 0.0                                               # masked pixels
    res = lm.levenberg_marquardt(lambda th: _decay(th, x), y, w, np.tile([1.0, 1.0, 0.0], (6, 1)),
                                 max_iter=200, xtol=1e-12, ftol=1e-15)
    assert res.converged.all() and not res.failed.any()
    for i in range(6):
        sw = np.sqrt(w[i])
        ref = least_squares(lambda p, sw=sw, yi=y[i]: sw * (yi - _decay(p[None], x)[0][0]), [1.0, 1.0, 0.0],
                            jac=lambda p, sw=sw: -sw[:, None] * _decay(p[None], x)[1][0], xtol=1e-15, ftol=1e-15)
        assert np.allclose(res.theta[i], ref.x, rtol=1e-6, atol=1e-8)
        assert res.chi2[i] == pytest.approx(2 * ref.cost, rel=1e-9)
        assert np.allclose(res.cov[i], np.linalg.inv(ref.jac.T @ ref.jac), rtol=1e-5)


def test_lm_split_evaluation_reaches_the_same_optimum(decay):
    """Values at trial points, Jacobian at accepted ones (split): scipy's optimum, like the joint call."""
    _decay = decay.model
    rng = np.random.default_rng(5)
    x = np.linspace(0, 4, 40)
    truth = np.column_stack([rng.uniform(1, 3, 6), rng.uniform(0.3, 1.5, 6), rng.uniform(-0.5, 0.5, 6)])
    sigma = 0.05
    y = _decay(truth, x)[0] + rng.normal(0, 1, (6, 40)) * sigma
    w = np.full(y.shape, 1.0 / sigma**2)
    calls = {"values": 0, "jacobian": 0}

    def values(th):
        calls["values"] += th.shape[0]
        return _decay(th, x)[0]

    def jacobian(th):
        calls["jacobian"] += th.shape[0]
        return _decay(th, x)[1]

    start = np.tile([1.0, 1.0, 0.0], (6, 1))
    res = lm.levenberg_marquardt(lambda th: _decay(th, x), y, w, start, max_iter=200, xtol=1e-12, ftol=1e-15,
                                 split=(values, jacobian))
    assert res.converged.all() and calls["jacobian"] < calls["values"]      # rejected steps: values only
    for i in range(6):
        ref = least_squares(lambda p, yi=y[i]: (yi - _decay(p[None], x)[0][0]) / sigma, [1.0, 1.0, 0.0],
                            xtol=1e-15, ftol=1e-15)
        assert np.allclose(res.theta[i], ref.x, rtol=1e-6, atol=1e-8)
        assert res.chi2[i] == pytest.approx(2 * ref.cost, rel=1e-9)


def _linear_problem(seed=1, m=4, n=30, L=2):
    rng = np.random.default_rng(seed)
    A = rng.normal(0, 1, (n, L))
    theta = rng.normal(0, 1, (m, L))
    sigma = rng.uniform(0.5, 1.5, (m, n))
    y = theta @ A.T + rng.normal(0, 1, (m, n)) * sigma

    def model(th):
        return th @ A.T, np.broadcast_to(A, (th.shape[0], n, L))

    return A, y, 1.0 / sigma**2, model


def _gaussian_posterior(A, y, w, s, mu0, cov0):
    """Closed form of the linear-Gaussian posterior: (mean (m, L), cov (m, L, L))."""
    P0 = np.linalg.inv(cov0)
    means, covs = [], []
    for yi, wi in zip(y, w, strict=True):
        H = A.T @ (wi[:, None] * A) / s + P0
        C = np.linalg.inv(H)
        means.append(C @ (A.T @ (wi * yi) / s + P0 @ mu0))
        covs.append(C)
    return np.array(means), np.array(covs)


def test_map_and_posterior_moments_are_exact_for_a_linear_gaussian_problem():
    """Linear model + Gaussian prior: MAP = posterior mean = closed form; Gauss-Hermite moments exact."""
    A, y, w, model = _linear_problem()
    mu0, cov0 = np.array([0.3, -0.2]), np.array([[0.5, 0.1], [0.1, 0.8]])
    box = (np.full(2, -50.0), np.full(2, 50.0))
    prior = posterior.Prior("gaussian", box[0], box[1], mu0, cov0)
    s = 4.0
    mean_ref, cov_ref = _gaussian_posterior(A, y, w, s, mu0, cov0)
    r = posterior.map_estimate(model, y, w, np.zeros((4, 2)), prior, s, max_iter=100, xtol=1e-12, ftol=1e-15)
    assert np.allclose(r.theta, mean_ref, atol=1e-8)
    assert np.allclose(r.cov, cov_ref, rtol=1e-8)
    mean, cov, n_eff = posterior.posterior_moments(lambda th: model(th)[0], y, w, r.theta, r.cov, prior, s,
                                                   n_nodes=3, inflate=1.0)
    assert np.allclose(mean, mean_ref, atol=1e-8)
    assert np.allclose(cov, cov_ref, rtol=1e-6)
    assert np.allclose(n_eff, 1.0 / (4 / 9 + 2 / 36) ** 2)      # 3-node GH weights (2/3, 1/6, 1/6) in 2-D
    # an inflated proposal still recovers a Gaussian posterior closely (importance weights)
    mean15, cov15, _ = posterior.posterior_moments(lambda th: model(th)[0], y, w, r.theta, r.cov, prior, s,
                                                   n_nodes=5, inflate=1.5)
    sd = np.sqrt(np.diagonal(cov_ref, axis1=1, axis2=2))
    assert np.all(np.abs(mean15 - mean_ref) < 0.05 * sd)
    assert np.allclose(np.sqrt(np.diagonal(cov15, axis1=1, axis2=2)), sd, rtol=0.1)


def test_flat_prior_map_is_the_least_squares_point_cut_to_the_box():
    A, y, w, model = _linear_problem(seed=2)
    ls = np.array([np.linalg.lstsq(A * np.sqrt(wi)[:, None], yi * np.sqrt(wi), rcond=None)[0]
                   for yi, wi in zip(y, w, strict=True)])
    lo, hi = ls.min(axis=0) + 1e-3, ls.max(axis=0) + 1.0           # the row with the lowest values is cut
    prior = posterior.Prior("flat", lo, hi)
    r = posterior.map_estimate(model, y, w, np.zeros((4, 2)), prior, 2.0, xtol=1e-12, ftol=1e-15)
    assert np.allclose(r.theta, np.clip(ls, lo, hi), atol=1e-8)
    assert np.all(prior.log_density(np.clip(ls, lo, hi)) == 0.0)
    assert np.isneginf(prior.log_density(lo - 1.0))


def test_gauss_hermite_nodes_integrate_gaussian_moments():
    z, logw = posterior.gauss_hermite(3, 4)
    wt = np.exp(logw)
    assert z.shape == (64, 3) and wt.sum() == pytest.approx(1.0)
    assert np.allclose(wt @ z, 0.0, atol=1e-14)
    assert np.allclose(np.einsum("k,ki,kj->ij", wt, z, z), np.eye(3), atol=1e-12)
    assert np.allclose(wt @ z[:, 0] ** 4, 3.0)                     # E[z^4] = 3, exact for 4 nodes


def test_make_prior_kinds():
    rng = np.random.default_rng(3)
    X = rng.normal(0, 1, (200, 2))
    mean, scale = np.array([3500.0, 0.0]), np.array([200.0, 0.3])
    tr = posterior.make_prior("training", X, mean, scale)
    assert tr.kind == "gaussian"
    assert np.allclose(tr.mean, X.mean(0)) and np.allclose(tr.cov, np.cov(X.T))
    lab = mean + X * scale                                          # the same labels, physical units
    arr = posterior.make_prior(lab, X, mean, scale)
    assert np.allclose(arr.mean, tr.mean) and np.allclose(arr.cov, tr.cov)
    flat = posterior.make_prior("flat", X, mean, scale)
    span = X.max(0) - X.min(0)
    assert np.allclose(flat.lo, X.min(0) - 0.1 * span) and np.allclose(flat.hi, X.max(0) + 0.1 * span)
    call = posterior.make_prior(lambda t: -0.5 * ((t[:, 0] - 3500.0) / 100.0) ** 2, X, mean, scale)
    th = np.array([[0.5, 0.0], [0.0, 0.0]])                          # 3600 K and 3500 K
    assert np.allclose(call.log_density(th), [-0.5, 0.0])
    assert posterior.make_prior(None, X, mean, scale) is None
    with pytest.raises(ValueError, match="prior='gauss'"):
        posterior.make_prior("gauss", X, mean, scale)
    with pytest.raises(ValueError, match="label samples"):
        posterior.make_prior(np.ones((5, 3)), X, mean, scale)


def test_std_calibration_recovers_a_power_law_of_snr():
    rng = np.random.default_rng(4)
    snr = np.exp(rng.uniform(np.log(5), np.log(200), 4000))
    ref = np.median(snr)
    f_true = np.column_stack([1.3 * (snr / ref) ** -0.2, np.full(snr.size, 0.7)])
    z = rng.normal(0, 1, (snr.size, 2)) * f_true
    cal, snr_ref = posterior.fit_std_calibration(z, snr, n_bins=6)
    assert snr_ref == pytest.approx(ref)
    assert cal[0] == pytest.approx([1.3, -0.2], abs=0.05)
    assert cal[1] == pytest.approx([0.7, 0.0], abs=0.05)
    fac = posterior.std_factor(cal, snr_ref, np.array([ref, np.nan]))
    assert np.allclose(fac[0], cal[:, 0]) and np.allclose(fac[1], cal[:, 0])


def test_std_calibration_ignores_a_fit_in_a_wrong_mode():
    """One gross outlier per SNR bin (z ~ 20, a wrong likelihood mode) leaves the factors unchanged."""
    rng = np.random.default_rng(6)
    snr = np.exp(rng.uniform(np.log(5), np.log(200), 400))
    z = rng.normal(0, 1, (snr.size, 1)) * 0.8
    clean, _ = posterior.fit_std_calibration(z, snr)
    edges = np.quantile(snr, [0, 0.25, 0.5, 0.75, 1])
    for lo in edges[:-1]:
        z[np.argmin(np.where(snr >= lo, snr, np.inf)), 0] = 20.0
    plain = np.sqrt(np.mean(z[:, 0] ** 2))
    assert plain > 1.2                                                # the outliers would dominate
    assert posterior.clipped_rms(z[:, 0]) == pytest.approx(np.sqrt(np.mean(z[np.abs(z[:, 0]) < 10, 0] ** 2)))
    cal, _ = posterior.fit_std_calibration(z, snr)
    assert cal[0] == pytest.approx(clean[0], abs=0.03) and cal[0, 0] == pytest.approx(0.8, abs=0.08)
    assert np.isnan(posterior.clipped_rms(np.array([np.nan])))
    small = np.array([0.9, -1.1, 1.0, -0.8, 1.2, -1.0, 0.7, -1.3, 1.1, 20.0])   # 10 values, one gross
    assert posterior.clipped_rms(small) == pytest.approx(np.sqrt(np.mean(small[:-1] ** 2)))


def test_choose_scale_by_normalised_mse():
    truth = np.array([[0.0, 10.0], [1.0, 20.0], [2.0, 30.0]])        # variances 2/3 and 200/3
    means = np.stack([truth + [[0.3, 0.0]], truth + [[0.0, 3.0]], truth + [[0.1, 1.0]]])
    best, score = posterior.choose_scale(means, truth)
    expect = [0.5 * (0.09 / (2 / 3)), 0.5 * (9 / (200 / 3)), 0.5 * (0.01 / (2 / 3) + 1 / (200 / 3))]
    assert np.allclose(score, expect) and best == 2


def test_compare_estimators_same_folds_for_all():
    """The ML row equals labels of SLAM models fitted on the same shuffled folds; skill = 1 - MSE/Var."""
    from sklearn.model_selection import KFold

    from mdslam.baselines import PCARidge
    from mdslam.slam import SLAM
    from mdslam.validation import compare_estimators

    rng = np.random.default_rng(5)
    y = np.column_stack([rng.uniform(3200, 3900, 60), rng.uniform(-0.6, 0.3, 60)])
    basis = rng.normal(0, 1, (3, 12))
    t, m = (y[:, :1] - 3550) / 350, (y[:, 1:] + 0.15) / 0.45
    flux = 1 - 0.3 / (1 + np.exp(-(basis[0] * t + basis[1] * m + 0.3 * basis[2] * t * m)))
    flux = flux + rng.normal(0, 0.01, flux.shape)
    ivar = np.full(flux.shape, 1e4)
    grid = dict(C=(10.0,), epsilon=(0.01,), gamma=(0.5,), cv=3, n_jobs=1)
    est = {"ml": {"prior": None}, "post": {"prior": "training", "chi2_scale": "cv"}}
    tab = compare_estimators(flux, y, ivar, label_names=["teff", "fe_h"], cv=3, random_state=1, slam_params=grid,
                             estimators=est, baselines={"pca_ridge": PCARidge(5)})
    assert list(tab["estimator"]) == ["ml", "post", "pca_ridge"]
    ref = np.full_like(y, np.nan)
    for tr, te in KFold(3, shuffle=True, random_state=1).split(y):
        model = SLAM(random_state=1, **grid).fit(flux[tr], y[tr], ivar[tr])
        ref[te] = model.predict(flux[te], ivar[te])
    rms = np.sqrt(np.mean((ref - y) ** 2, axis=0))
    assert tab["rms_teff"][0] == pytest.approx(rms[0], rel=1e-9)
    assert tab["rms_fe_h"][0] == pytest.approx(rms[1], rel=1e-9)
    for n, k in (("teff", 0), ("fe_h", 1)):
        assert np.allclose(tab[f"skill_{n}"], 1 - np.asarray(tab[f"rms_{n}"]) ** 2 / y[:, k].var())
    assert np.isnan(tab["zwidth_teff"][0]) and np.isfinite(tab["zwidth_teff"][1])
    assert len(tab.meta["chi2_scale_per_fold"]) == 3


@pytest.mark.slow
def test_mock_track_posterior_beats_ml_at_low_snr_with_calibrated_errors(data_mirror):
    """Mock LAMOST spectra (known truth): posterior-mean RMS < ML RMS at SNR < 30; z width near 1 per SNR bin.

    z = (posterior mean - truth) / e_label on 400 test stars, 4 equal-count SNR bins, target
    0.8-1.2.  With the plain RMS of the CV z per SNR bin as the calibration, one training star
    fitted in a wrong likelihood mode (SNR 13, Teff 3711 K fitted at 2592 K) set the lowest-SNR
    factor and the test widths were Teff 0.74, 0.89, 0.95, 1.13; with the clipped RMS
    (``posterior.clipped_rms``): Teff 0.95, 1.02, 0.99, 1.04, [Fe/H] 1.03, 1.07, 1.08, 0.91.
    """
    from mdslam.mock import MockSurvey
    from mdslam.preprocess import log_lambda_grid, preprocess
    from mdslam.slam import SLAM

    ms = MockSurvey("lamost", seed=11)
    grid = log_lambda_grid(6147.0, 8888.0, n=300)
    spec, truth = ms.generate(900)
    pp = preprocess(spec, grid=grid, progress=False)
    y = np.column_stack([truth["teff_true"], truth["feh_true"]])
    tr, te = np.arange(500), np.arange(500, 900)
    model = SLAM(C=(1.0, 10.0), epsilon=(0.03, 0.1), gamma=(0.3, 1.0), cv=4, n_jobs=1, random_state=0,
                 prior="training")
    model.fit(pp.flux[tr], y[tr], pp.ivar[tr], wavelength=grid, label_names=["teff", "fe_h"])
    t = model.predict_table(pp.flux[te], pp.ivar[te])
    snr = np.asarray(t["snr"])
    edges = np.quantile(snr, np.linspace(0, 1, 5))
    for li, n in enumerate(["teff", "fe_h"]):
        low = snr < 30
        rms_post = np.sqrt(np.mean((t[n][low] - y[te][low, li]) ** 2))
        rms_ml = np.sqrt(np.mean((t[f"{n}_ml"][low] - y[te][low, li]) ** 2))
        assert rms_post < rms_ml, (n, rms_post, rms_ml)
        z = (t[n] - y[te][:, li]) / t[f"e_{n}"]
        for k in range(4):
            sel = (snr >= edges[k]) & (snr <= edges[k + 1])
            assert 0.8 <= np.std(z[sel]) <= 1.2, (n, k, np.std(z[sel]))
