"""Tests of the correlated-pixel likelihood (mdslam.slam.noise and SLAM(likelihood="correlated"))."""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import least_squares

from mdslam import modelfile
from mdslam.slam import SLAM, lm, noise
from mdslam.slam.fixed import fit_fixed

V1_FILE = Path(__file__).parent / "data" / "slam_model_v1.npz"


def _three_pixels():
    """A hand-made 3-pixel case: two factors, a diagonal and each pixel's own noise."""
    V = np.array([[0.30, 0.05], [0.20, -0.10], [-0.10, 0.15]])
    d = np.array([0.010, 0.020, 0.015])
    ivar = np.array([100.0, 50.0, 200.0])
    r = np.array([0.12, -0.30, 0.07])
    return V, d, ivar, r


def test_whitened_chi2_is_r_sigma_inverse_r_on_three_pixels():
    """|W r|^2 = r^T Sigma^-1 r (numpy.linalg.solve), W^T W = Sigma^-1, a masked pixel drops out exactly."""
    V, d, ivar, r = _three_pixels()
    Sigma = V @ V.T + np.diag(d + 1.0 / ivar)
    wh = noise.Whitener((1.0 / (d + 1.0 / ivar))[None, :], V)
    assert np.sum(wh([0], r[None, :]) ** 2) == pytest.approx(r @ np.linalg.solve(Sigma, r), rel=1e-12)
    W = wh([0], np.eye(3)[None])[0]                                   # columns: W applied to unit vectors
    assert np.allclose(W.T @ W, np.linalg.inv(Sigma), rtol=1e-10, atol=1e-10)
    # columns beyond the pixels (the prior residuals of the MAP) pass through unchanged
    aug = wh([0], np.concatenate([r, [1.5, -2.0]])[None, :])[0]
    assert np.allclose(aug[3:], [1.5, -2.0]) and np.allclose(aug[:3], wh([0], r[None, :])[0])
    # pixel 2 masked (ivar = 0, weight 0): the chi2 of the Gaussian marginal of pixels 0 and 1
    w = 1.0 / (d + 1.0 / ivar)
    w[2] = 0.0
    wm = noise.Whitener(w[None, :], V)
    S01 = Sigma[:2, :2]
    assert np.sum(wm([0], r[None, :]) ** 2) == pytest.approx(r[:2] @ np.linalg.solve(S01, r[:2]), rel=1e-12)
    # the grid start's chi2 of every (spectrum, grid point) pair
    F = np.array([[0.0, 0.1, -0.1], [0.2, -0.2, 0.05], [0.01, 0.0, 0.3], [0.1, 0.1, 0.1]])
    y = np.vstack([r, 2 * r])
    w2 = np.tile(1.0 / (d + 1.0 / ivar), (2, 1))
    ref = np.array([[(yi - f) @ np.linalg.solve(Sigma, yi - f) for f in F] for yi in y])
    assert np.allclose(noise.Whitener(w2, V).grid_chi2(y, F), ref, rtol=1e-10)
    grid = np.arange(8.0).reshape(4, 2)
    start = lm.grid_start(y, w2, grid, F, whiten=noise.Whitener(w2, V))
    assert np.array_equal(start, grid[np.argmin(ref, axis=1)])


def _decay(theta, x):
    a, b, c = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
    e = np.exp(-b * x[None, :])
    J = np.stack([e, -a * x[None, :] * e, np.ones_like(e)], axis=-1)
    return a * e + c, J


def test_whitened_lm_reaches_scipy_optimum_of_the_correlated_chi2():
    """Batched LM on whitened residuals = scipy least_squares on Cholesky-whitened residuals (full Sigma)."""
    rng = np.random.default_rng(4)
    n, m = 30, 5
    x = np.linspace(0, 4, n)
    V = 0.05 * np.column_stack([np.sin(x), np.cos(2 * x), np.ones(n)])
    d = np.full(n, 0.02**2)
    ivar = rng.uniform(300, 3000, (m, n))
    truth = np.column_stack([rng.uniform(1, 3, m), rng.uniform(0.3, 2, m), rng.uniform(-0.5, 0.5, m)])
    y = _decay(truth, x)[0] + (rng.normal(0, 1, (m, 3)) @ V.T) + rng.normal(0, 1, (m, n)) * np.sqrt(d + 1 / ivar)
    w = 1.0 / (d + 1.0 / ivar)
    wh = noise.Whitener(w, V)
    res = lm.levenberg_marquardt(lambda th: _decay(th, x), y, np.ones((m, n)), np.tile([1.0, 1.0, 0.0], (m, 1)),
                                 max_iter=200, xtol=1e-12, ftol=1e-15, whiten=wh)
    assert res.converged.all()
    for i in range(m):
        Lc = np.linalg.cholesky(V @ V.T + np.diag(1.0 / w[i]))

        def fun(p, yi=y[i], Lc=Lc):
            return np.linalg.solve(Lc, yi - _decay(p[None], x)[0][0])

        ref = least_squares(fun, [1.0, 1.0, 0.0], xtol=1e-15, ftol=1e-15, gtol=1e-15)
        assert np.allclose(res.theta[i], ref.x, rtol=1e-6, atol=1e-8)
        assert res.chi2[i] == pytest.approx(2 * ref.cost, rel=1e-8)
        assert np.allclose(res.cov[i], np.linalg.inv(ref.jac.T @ ref.jac), rtol=1e-4)


def test_factor_model_finds_the_rank_and_the_covariance():
    """Residuals drawn from 3 factors + a diagonal: rank 3 chosen by held-out likelihood, Sigma recovered."""
    rng = np.random.default_rng(0)
    n, p = 600, 25
    V = rng.normal(0, 1, (p, 3)) * np.array([1.0, 0.6, 0.4])
    d = rng.uniform(0.05, 0.2, p)
    R = rng.normal(0, 1, (n, 3)) @ V.T + rng.normal(0, 1, (n, p)) * np.sqrt(d)
    folds = [(np.setdiff1d(np.arange(n), te), te) for te in np.array_split(rng.permutation(n), 4)]
    Vh, dh, info = noise.fit_factor_model(R, folds, ranks=(0, 1, 2, 3, 5, 8))
    assert info["rank"] == 3
    Sig, Sh = V @ V.T + np.diag(d), noise.residual_covariance(Vh, dh)
    assert np.linalg.norm(Sh - Sig) / np.linalg.norm(Sig) < 0.15


def make_correlated(n, seed, n_pix=40):
    """Spectra in 2 labels whose noise is mostly 3 smooth common-mode shapes (known truth).

    Returns flux, ivar (the white part only, as a pipeline would give), labels (n, 2).
    """
    rng = np.random.default_rng(seed)
    lab = np.column_stack([rng.uniform(3200, 4000, n), rng.uniform(-0.8, 0.4, n)])
    t, m = (lab[:, 0:1] - 3600) / 400, (lab[:, 1:2] + 0.2) / 0.6
    c = np.random.default_rng(99).normal(0, 1, (4, n_pix))
    f0 = 1.0 - 0.5 / (1.0 + np.exp(-(c[0] * t + 0.8 * c[1] * m + 0.3 * c[2] * t * m + 0.2 * c[3] * t**2)))
    x = np.linspace(0, 1, n_pix)
    shapes = np.column_stack([np.ones(n_pix), np.sin(np.pi * x), np.cos(2 * np.pi * x)])
    white = 0.004
    flux = f0 + rng.normal(0, 0.02, (n, 3)) @ shapes.T + rng.normal(0, white, f0.shape)
    return flux, np.full(f0.shape, white**-2), lab


@pytest.fixture(scope="module")
def correlated_models():
    """An independent and a correlated model on the same spectra and per-pixel hyperparameters."""
    flux, ivar, lab = make_correlated(300, seed=1)
    grid = dict(C=(1.0, 10.0), epsilon=(0.01, 0.05), gamma=(0.1, 0.5))
    ind = SLAM(cv=4, random_state=3, n_jobs=1, **grid).fit(flux, lab, ivar, label_names=["teff", "fe_h"])
    hyper = {"C": ind.C_, "epsilon": ind.epsilon_, "gamma": ind.gamma_, "cv_mse_scaled": ind.cv_mse_scaled_,
             "cv_md_scaled": ind.cv_md_scaled_, "usable": ind.pixel_usable_}
    cor = fit_fixed(SLAM(cv=4, random_state=3, n_jobs=1, likelihood="correlated", **grid), flux, lab, ivar,
                    hyper, label_names=["teff", "fe_h"])
    return ind, cor


def test_correlated_likelihood_beats_independent_on_correlated_noise(correlated_models):
    """Known truth: with common-mode noise the correlated ML labels have a lower RMS than the independent ones."""
    ind, cor = correlated_models
    assert cor.noise_rank_cv_["rank"] >= 3                          # the three noise shapes (and model error)
    flux, ivar, lab = make_correlated(200, seed=8)
    p_ind, p_cor = ind.predict(flux, ivar), cor.predict(flux, ivar)
    for li in range(2):
        rms_ind = np.sqrt(np.mean((p_ind[:, li] - lab[:, li]) ** 2))
        rms_cor = np.sqrt(np.mean((p_cor[:, li] - lab[:, li]) ** 2))
        assert rms_cor < 0.8 * rms_ind, (li, rms_cor, rms_ind)


def test_correlated_model_round_trip_and_posterior(correlated_models, tmp_path):
    """Model file round trip: identical tables (ML and posterior); the noise model and option are stored."""
    _, cor = correlated_models
    path = tmp_path / "cor.npz"
    cor.save(path)
    again = SLAM.load(path)
    assert again.likelihood == "correlated" and np.array_equal(again.noise_factor_, cor.noise_factor_)
    assert again.noise_rank_cv_["rank"] == cor.noise_rank_cv_["rank"]
    flux, ivar, _ = make_correlated(7, seed=5)
    for model in (cor, again):
        model.set_params(prior="training", chi2_scale=2.0)
    t1, t2 = cor.predict_table(flux, ivar), again.predict_table(flux, ivar)
    for c in t1.colnames:
        assert np.array_equal(np.asarray(t1[c]), np.asarray(t2[c]), equal_nan=True), c
    assert np.all(np.isfinite(t1["teff"])) and np.all(t1["e_teff"] > 0)
    # single-precision LM on whitened residuals: labels within 5 % of their formal error of float64's
    cor.set_params(prior=None, chi2_scale="cv")
    t64 = cor.predict_table(flux, ivar)
    t32 = copy.deepcopy(cor).set_params(lm_float32=True).predict_table(flux, ivar)
    for n in ("teff", "fe_h"):
        assert np.all(np.abs(t32[n] - t64[n]) < 0.05 * t64[f"e_{n}"]), n


def test_old_model_files_load_as_independent(correlated_models, tmp_path):
    """A version-1 file and a version-2 file (no 'likelihood') load with the independent likelihood of eq. 3."""
    assert SLAM.load(V1_FILE).likelihood == "independent"
    ind, _ = correlated_models
    path = tmp_path / "ind.npz"
    ind.save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["metadata"][()]))
    assert meta["format_version"] == modelfile.FORMAT_VERSION == 3
    meta["format_version"] = 2
    del meta["params"]["likelihood"]
    arrays["metadata"] = np.array(json.dumps(meta))
    v2 = tmp_path / "v2.npz"
    np.savez_compressed(v2, **arrays)
    assert zipfile.is_zipfile(v2)
    old = SLAM.load(v2)
    assert old.likelihood == "independent" and old.noise_factor_ is None
    flux, ivar, _ = make_correlated(5, seed=6)
    assert np.array_equal(old.predict(flux, ivar), ind.predict(flux, ivar))


def test_correlated_without_noise_model_and_unknown_likelihood_are_clear_errors(correlated_models):
    ind, _ = correlated_models
    from sklearn.base import clone
    m = clone(ind)
    m.__dict__.update({k: v for k, v in ind.__dict__.items() if k.endswith("_")})
    m.set_params(likelihood="correlated")
    with pytest.raises(ValueError, match="fitted without a noise model"):
        m.predict(make_correlated(2, seed=3)[0])
    flux, ivar, lab = make_correlated(20, seed=2)
    with pytest.raises(ValueError, match="likelihood='gaussian'"):
        SLAM(likelihood="gaussian").fit(flux, lab, ivar)


def test_cli_train_with_the_correlated_likelihood(tmp_path, capsys):
    """``mdslam train --likelihood correlated`` writes a model with its noise model; it labels spectra."""
    from astropy.table import Table

    from mdslam import cli

    flux, ivar, lab = make_correlated(60, seed=4, n_pix=20)
    ids = np.array([f"s{i:03d}" for i in range(60)])
    np.savez(tmp_path / "spec.npz", flux=flux, ivar=ivar, wavelength=np.linspace(6000, 9000, 20), id=ids)
    Table({"id": ids, "teff": lab[:, 0], "fe_h": lab[:, 1]}).write(tmp_path / "lab.fits")
    out = tmp_path / "m.npz"
    code = cli.main(["train", "--spectra", str(tmp_path / "spec.npz"), "--labels", str(tmp_path / "lab.fits"),
                     "--label-cols", "teff,fe_h", "--id-col", "id", "--out", str(out), "--C", "10",
                     "--epsilon", "0.01", "--gamma", "0.5", "--cv", "3", "--likelihood", "correlated"])
    printed = capsys.readouterr().out
    assert code == 0 and "likelihood: correlated pixels" in printed
    model = SLAM.load(out)
    assert model.likelihood == "correlated" and model.noise_factor_.shape[0] == 20
    assert np.all(np.isfinite(model.predict(flux[:5], ivar[:5])))


def test_compare_estimators_scores_the_correlated_likelihood_on_the_same_folds():
    """Nested CV with a correlated estimator: its twin model shares the fold model's per-pixel hyperparameters,
    and on common-mode noise (known truth) its labels beat the independent ones on every label."""
    from mdslam import validation

    flux, ivar, lab = make_correlated(240, seed=11)
    grid = dict(C=(1.0, 10.0), epsilon=(0.01,), gamma=(0.1, 0.5), cv=3, n_jobs=1)
    models = []
    est = {"ml": {"prior": None}, "cor_ml": {"likelihood": "correlated", "prior": None}}
    t = validation.compare_estimators(flux, lab, ivar, label_names=["teff", "fe_h"], cv=3, random_state=2,
                                      slam_params=grid, estimators=est, baselines={}, models=models)
    assert list(t["estimator"]) == ["ml", "cor_ml"] and len(models) == 3
    assert models[0].likelihood == "independent"            # the fold model itself is not changed
    for n in ("teff", "fe_h"):
        assert t[f"rms_{n}"][1] < 0.8 * t[f"rms_{n}"][0], (n, list(t[f"rms_{n}"]))


def test_factor_model_rank_zero_is_the_per_pixel_variance_and_the_mean():
    """Rank 0 by hand: the diagonal is each pixel's variance about its mean, the mean the one factor."""
    R = np.array([[1.0, 0.0], [3.0, 2.0], [2.0, 4.0]])           # means 2, 2; variances 2/3, 8/3
    V, d = noise.factor_model(R, 0)
    assert np.allclose(d, [2.0 / 3.0, 8.0 / 3.0]) and np.allclose(V, [[2.0], [2.0]])
    V2, d2 = noise.factor_model(R - R.mean(axis=0), 0)           # zero mean: no extra factor
    assert V2.shape == (2, 0) and np.allclose(d2, d)


def test_label_rank_choice_finds_the_noise_shapes_and_beats_rank_zero(correlated_models):
    """Known truth: 3 common-mode noise shapes; CV label error picks rank 5 over 0 for both labels, and it pays."""
    from mdslam import validation

    _, cor = correlated_models
    flux, ivar, lab = make_correlated(300, seed=1)
    new, ivar_new, truth = make_correlated(100, seed=8)
    labels, info = validation.label_rank_predict(cor, flux, lab, ivar, new, ivar_new, ranks=(0, 5))
    assert list(info["rank"]) == [5, 5]
    assert np.all(info["rms"][1] < 0.8 * info["rms"][0])          # CV label RMS on the training stars
    zero, _ = validation.label_rank_predict(cor, flux, lab, ivar, new, ivar_new, ranks=(0,))
    for li in range(2):
        rms = np.sqrt(np.mean((labels[:, li] - truth[:, li]) ** 2))
        rms0 = np.sqrt(np.mean((zero[:, li] - truth[:, li]) ** 2))
        assert rms < 0.8 * rms0, (li, rms, rms0)
