"""Tests of the SLAM estimator (mdslam.slam), its batched SVR solver (mdslam.svr) and model file."""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.svm import SVR

from mdslam import modelfile, validation
from mdslam.flags import LabelFlag
from mdslam.slam import (
    QIU2025_USABLE_RANGE,
    SLAM,
    _iter_folds,
    describe_flag,
)
from mdslam.slam.infer import quick_grid
from mdslam.svr import KernelEig, kkt_gap, rbf_kernel, solve_svr_exact

LABELS = ["teff", "logg", "fe_h"]
UNITS = ["K", "dex", "dex"]


def make_spectra(n, n_pix=48, snr=100.0, seed=0):
    """Generated 'spectra': smooth nonlinear (sigmoid) line depths in 3 labels, plus noise.

    Returns flux (n, n_pix), ivar (n, n_pix), labels (n, 3), noiseless flux.
    """
    rng = np.random.default_rng(seed)
    lab = np.column_stack([rng.uniform(3100, 4100, n), rng.uniform(4.5, 5.1, n), rng.uniform(-0.8, 0.4, n)])
    t = (lab[:, 0:1] - 3600) / 500
    g = (lab[:, 1:2] - 4.8) / 0.3
    m = (lab[:, 2:3] + 0.2) / 0.6
    c = np.random.default_rng(12345).normal(0, 1, (6, n_pix))
    z = c[0] * t + 0.6 * c[1] * g + 0.8 * c[2] * m + 0.4 * c[3] * t * m + 0.3 * c[4] * t**2 + 0.3 * c[5] * g * t
    f0 = 1.0 - 0.5 / (1.0 + np.exp(-z))
    snr = np.broadcast_to(np.asarray(snr, float), (n,))[:, None]
    flux = f0 + rng.normal(0, 1, f0.shape) / snr
    ivar = np.broadcast_to(snr**2, f0.shape).copy()
    return flux, ivar, lab, f0


@pytest.fixture(scope="module")
def trained():
    flux, ivar, lab, _ = make_spectra(360, seed=1)
    model = SLAM(C=(1.0, 10.0), epsilon=(0.01, 0.05), gamma=(0.1, 0.5), cv=4, random_state=3)
    model.fit(flux, lab, ivar, label_names=LABELS, label_units=UNITS, wavelength=np.linspace(6000, 9000, 48))
    return model, (flux, ivar, lab)


# --------------------------------------------------------------------- the solver
def _sk_duals(K, Y, C, eps, tol=1e-10, sample_weight=None):
    B, b = [], []
    for y in Y:
        s = SVR(kernel="precomputed", C=C, epsilon=eps, tol=tol).fit(K, y, sample_weight=sample_weight)
        beta = np.zeros(K.shape[0])
        beta[s.support_] = s.dual_coef_[0]
        B.append(beta)
        b.append(s.intercept_[0])
    return np.array(B), np.array(b)


@pytest.mark.parametrize("gamma,C,eps", [(0.3, 1.0, 0.05), (1.0, 10.0, 0.1)])
def test_batched_solver_reaches_libsvm_optimum(gamma, C, eps):
    """Dual objective <= libsvm's (tol 1e-10) for every target; fitted values agree."""
    flux, _, lab, _ = make_spectra(200, n_pix=12, seed=2)
    X = (lab - lab.mean(0)) / lab.std(0)
    Y = ((flux - flux.mean(0)) / flux.std(0)).T
    K = rbf_kernel(X, X, gamma)
    ke = KernelEig.from_kernel(K)
    sol = solve_svr_exact(ke, Y, C, eps, tol=1e-3, final_tol=1e-9)
    Bs, bs = _sk_duals(K, Y, C, eps)

    def dual_objective(B):
        return 0.5 * np.einsum("pi,ij,pj->p", B, K, B) - (Y * B).sum(1) + eps * np.abs(B).sum(1)

    assert np.all(dual_objective(sol.beta) <= dual_objective(Bs) + 1e-9)
    assert np.all(np.abs(sol.beta.sum(1)) < 1e-8) and np.all(np.abs(sol.beta) <= C + 1e-12)
    assert np.max(sol.gap) < 1e-9
    f_ours = sol.beta @ K + sol.intercept[:, None]
    f_sk = Bs @ K + bs[:, None]
    assert np.max(np.abs(f_ours - f_sk)) < 1e-4


def test_solver_sample_weights_match_libsvm():
    """C_i = 0 removes sample i exactly, like libsvm's sample_weight = 0."""
    flux, _, lab, _ = make_spectra(150, n_pix=6, seed=4)
    X = (lab - lab.mean(0)) / lab.std(0)
    Y = ((flux - flux.mean(0)) / flux.std(0)).T
    w = np.ones(150)
    w[::7] = 0.0
    K = rbf_kernel(X, X, 0.5)
    ke = KernelEig.from_kernel(K)
    sol = solve_svr_exact(ke, Y, 3.0 * w[None, :], 0.05, final_tol=1e-9)
    assert np.all(sol.beta[:, w == 0] == 0)
    keep = w > 0
    Bs, bs = _sk_duals(K[np.ix_(keep, keep)], Y[:, keep], 3.0, 0.05)
    f_ours = sol.beta[:, keep] @ K[keep] + sol.intercept[:, None]
    f_sk = Bs @ K[keep] + bs[:, None]
    assert np.max(np.abs(f_ours - f_sk)) < 1e-4


def test_kkt_gap_counts_equality_violation():
    beta = np.full((1, 4), 2.0)  # all at the upper bound: sum beta != 0 is infeasible
    gap, _ = kkt_gap(beta, np.zeros((1, 4)), np.full((1, 4), 2.0), np.full((1, 1), 0.1))
    assert gap[0] == pytest.approx(8.0)


# --------------------------------------------------------------------- training / forward model
def test_forward_model_matches_sklearn_predict(trained):
    """The kernel-expansion forward model equals sklearn SVR.predict pixel by pixel (1e-8)."""
    model, (flux, ivar, lab) = trained
    m = clone(model)
    m.__dict__.update({k: v for k, v in model.__dict__.items() if k.endswith("_")})
    Xs = model.X_train_
    Ys = (flux - model.flux_mean_) / model.flux_scale_
    rng = np.random.default_rng(0)
    m.gamma_ = rng.choice([0.1, 0.5, 2.0], size=model.n_features_in_)   # several gamma groups
    m.dual_coef_ = np.zeros_like(model.dual_coef_)
    m.intercept_ = np.zeros_like(model.intercept_)
    svrs = []
    for j in range(model.n_features_in_):
        s = SVR(C=3.0, epsilon=0.02, gamma=m.gamma_[j]).fit(Xs, Ys[:, j])
        m.dual_coef_[j, s.support_] = s.dual_coef_[0]
        m.intercept_[j] = s.intercept_[0]
        svrs.append(s)
    m._reset_cache()
    th = lab[:20] + rng.normal(0, 1, (20, 3)) * [50, 0.05, 0.05]
    th_s = (th - model.label_mean_) / model.label_scale_
    ours = (m.predict_flux(th) - m.flux_mean_) / m.flux_scale_
    ref = np.column_stack([s.predict(th_s) for s in svrs])
    assert np.max(np.abs(ours - ref)) < 1e-8


def test_jacobian_matches_finite_differences(trained):
    model, (_, _, lab) = trained
    th = lab[:5]
    J = model.flux_jacobian(th)
    for k, h in enumerate([0.5, 1e-4, 1e-4]):
        d = np.zeros(3)
        d[k] = h
        fd = (model.predict_flux(th + d) - model.predict_flux(th - d)) / (2 * h)
        assert np.allclose(fd, J[:, :, k], rtol=1e-5, atol=1e-7 * np.abs(J[:, :, k]).max())


def test_float32_forward_model_matches_float64_and_finite_differences(trained):
    """The single-precision kernel products: F and J within float32 rounding of float64; J vs finite differences."""
    model, (_, _, lab) = trained
    th = model._scale_labels(lab[:7])
    F, J = model._model_scaled(th, jacobian=True)
    F32, J32 = model._model_scaled(th, jacobian=True, dtype=np.float32)
    Fv, _ = model._model_scaled(th, dtype=np.float32)
    J32d = model._model_scaled(th, jacobian=True, dtype=np.float32, values=False)[1]     # derivatives only
    # bound: float32 epsilon x the sum of |beta_ij k_i| (<= sum |beta_ij|), per pixel
    bound = 1e-6 * np.abs(model.dual_coef_).sum(axis=1) + 1e-12
    assert np.all(np.abs(F32 - F) <= bound) and np.all(np.abs(Fv - F) <= bound)
    # dF/dtheta_l sums beta_ij k_i (-2 gamma_j) (theta_l - x_il): the same bound times 2 gamma_j max|theta - x|
    reach = np.abs(th[:, None, :] - model.X_train_[None]).max()
    for Jx in (J32, J32d):
        assert np.all(np.abs(Jx - J) <= (2 * model.gamma_ * reach * bound)[None, :, None])
    scale = np.abs(J).max()
    h = 1e-3
    for k in range(3):
        d = np.zeros(3)
        d[k] = h
        fd = (model._model_scaled(th + d)[0] - model._model_scaled(th - d)[0]) / (2 * h)
        assert np.allclose(J32[:, :, k], fd, rtol=0, atol=2e-3 * scale)


def test_float32_labels_agree_with_float64(trained):
    """lm_float32: labels within 5 % of their formal error of the float64 path, the same rms against truth."""
    model, _ = trained
    flux, ivar, lab, _ = make_spectra(120, seed=7)
    t64 = copy.copy(model).set_params(lm_float32=False).predict_table(flux, ivar)
    t32 = copy.copy(model).set_params(lm_float32=True).predict_table(flux, ivar)
    assert np.all(t32["converged"]) and np.array_equal(t32["flag"], t64["flag"])
    for n, true in zip(LABELS, lab.T, strict=True):
        assert np.all(np.abs(t32[n] - t64[n]) <= 0.05 * t64[f"e_{n}"]), n
        assert np.allclose(t32[f"e_{n}"], t64[f"e_{n}"], rtol=1e-3)
        rms32, rms64 = np.sqrt(np.mean((t32[n] - true) ** 2)), np.sqrt(np.mean((t64[n] - true) ** 2))
        assert abs(rms32 / rms64 - 1) < 0.01, (n, rms32, rms64)
    assert np.allclose(t32["chi2"], t64["chi2"], rtol=1e-3)


def test_recovers_held_out_labels(trained):
    model, _ = trained
    flux, ivar, lab, _ = make_spectra(60, seed=7)
    tab = model.predict_table(flux, ivar)
    pred = np.column_stack([tab[n] for n in LABELS])
    rms = np.sqrt(np.mean((pred - lab) ** 2, axis=0))
    assert rms[0] < 30.0 and rms[1] < 0.05 and rms[2] < 0.05, rms
    assert np.all(tab["converged"])
    assert np.all(tab["n_good_pixels"] == 48)
    # formal errors are of the size of the scatter (same order of magnitude)
    e = np.median(np.column_stack([tab[f"e_{n}"] for n in LABELS]), axis=0)
    assert np.all((e > rms / 5) & (e < rms * 5)), (e, rms)
    assert tab["teff"].unit == "K"
    # sklearn-style predict gives the same labels as the table
    assert np.allclose(model.predict(flux, ivar), pred)


def test_learned_state_and_cv_mse_units(trained):
    model, (flux, _, _) = trained
    n_pix = flux.shape[1]
    for name in ("C_", "epsilon_", "gamma_", "cv_mse_", "cv_md_", "cv_mse_scaled_", "intercept_"):
        assert getattr(model, name).shape == (n_pix,)
    assert model.dual_coef_.shape == (n_pix, 360)
    assert model.cv_mse_grid_.shape == (n_pix, 2, 2, 2)
    assert np.allclose(model.cv_mse_, model.cv_mse_scaled_ * model.flux_scale_**2)
    assert np.allclose(model.cv_mse_scaled_, model.cv_mse_grid_.reshape(n_pix, -1).min(1))
    # CV-MSE in flux units is about the noise variance (1/SNR^2 = 1e-4) or more
    assert np.all(model.cv_mse_ > 0.5e-4) and np.median(model.cv_mse_) < 1e-3
    assert model.solver_info_["refit_max_kkt_gap"] <= model.refit_tol


def test_cv_mse_not_worse_than_sklearn_gridsearch():
    """Per pixel, our CV-MSE equals a brute-force GridSearchCV on the same folds (both at tol 1e-7)."""
    flux, ivar, lab, _ = make_spectra(160, n_pix=5, seed=5)
    grid = dict(C=(1.0, 10.0), epsilon=(0.02, 0.1), gamma=(0.2, 1.0))
    folds = KFold(4, shuffle=True, random_state=11)
    model = SLAM(**grid, cv=folds, tol=1e-7).fit(flux, lab)
    Xs = (lab - lab.mean(0)) / lab.std(0)
    Ys = (flux - flux.mean(0)) / flux.std(0)
    for j in range(flux.shape[1]):
        gs = GridSearchCV(SVR(tol=1e-7), {k: list(v) for k, v in grid.items()}, cv=folds,
                          scoring="neg_mean_squared_error").fit(Xs, Ys[:, j])
        best_sk = -gs.best_score_
        assert model.cv_mse_scaled_[j] <= best_sk * (1 + 1e-4)
        assert model.cv_mse_scaled_[j] == pytest.approx(best_sk, rel=1e-4)
        # and grid point by grid point
        for params, score in zip(gs.cv_results_["params"], gs.cv_results_["mean_test_score"], strict=True):
            ic = grid["C"].index(params["C"])
            ie = grid["epsilon"].index(params["epsilon"])
            ig = grid["gamma"].index(params["gamma"])
            assert model.cv_mse_grid_[j, ic, ie, ig] == pytest.approx(-score, rel=1e-4)


def test_folds_are_shuffled_and_seeded():
    a = _iter_folds(50, 5, 0)
    b = _iter_folds(50, 5, 0)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0][1], np.arange(10))      # not astroslam's unshuffled blocks
    assert sorted(np.concatenate([t for _, t in a]).tolist()) == list(range(50))


# --------------------------------------------------------------------- prediction robustness
def test_bad_spectra_are_flagged_not_fatal(trained):
    model, _ = trained
    flux, ivar, lab, _ = make_spectra(6, seed=8)
    flux[1] = np.nan                      # all NaN
    ivar[2] = 0.0                         # no information
    ivar[3, :40] = 0.0                    # most pixels masked
    spectra = [f for f in flux] + [np.ones(30)]            # wrong length
    ivars = [v for v in ivar] + [np.ones(30)]
    tab = model.predict_table(spectra, ivars)
    assert len(tab) == 7
    for i in (1, 2, 6):
        assert tab["flag"][i] & LabelFlag.FAILED and np.isnan(tab["teff"][i])
    assert tab["flag"][3] & LabelFlag.FEW_PIXELS and np.isfinite(tab["teff"][3])
    for i in (0, 4, 5):
        assert tab["flag"][i] == 0
        assert abs(tab["teff"][i] - lab[i, 0]) < 100
    with pytest.raises(ValueError, match="pixels but the model grid has 48"):
        model.predict(np.ones((2, 30)))


def test_flags_domain_and_low_snr(trained):
    model, _ = trained
    flux, ivar, lab, _ = make_spectra(40, snr=np.r_[np.full(20, 100.0), np.full(20, 5.0)], seed=9)
    m = copy.deepcopy(model).set_params(domain=QIU2025_USABLE_RANGE)   # a predict-time parameter
    tab = m.predict_table(flux, ivar)
    low = (tab["flag"] & LabelFlag.LOW_SNR) > 0
    assert np.array_equal(low, np.r_[np.zeros(20, bool), np.ones(20, bool)])
    out_teff = (tab["teff"] < 3100) | (tab["teff"] > 3900)
    assert np.array_equal((tab["flag"] & LabelFlag.OUTSIDE_DOMAIN) > 0, out_teff)
    assert "teff outside the domain" in describe_flag(LabelFlag.OUTSIDE_DOMAIN, LABELS)


# --------------------------------------------------------------------- CV labels and error law
def test_cv_predict_and_error_law(trained):
    model, _ = trained
    flux, ivar, lab, _ = make_spectra(240, snr=np.geomspace(10, 200, 240), seed=10)
    m = copy.deepcopy(model).set_params(cv=3)
    cvt = m.cv_predict(flux, lab, ivar)
    assert len(cvt) == 240 and np.array_equal(cvt["id"], np.arange(240))
    assert np.allclose(cvt["teff_true"], lab[:, 0])
    pred = np.column_stack([cvt[n] for n in LABELS])
    bins = m.fit_error_law(cvt["snr"], lab, pred, n_bins=4, min_per_bin=20)
    assert len(bins) == 4
    a, floor = m.error_law_["a"], m.error_law_["floor"]     # sigma^2 = floor^2 + (a/SNR)^2
    assert np.all(a >= 0) and np.all(floor >= 0) and np.any(a > 0)
    _, laws = validation.fit_floor_laws(cvt["snr"], pred, lab, LABELS, n_bins=4, min_per_bin=20)
    assert np.allclose(a, [laws[n].a for n in LABELS]) and np.allclose(floor, [laws[n].floor for n in LABELS])
    t = m.predict_table(flux[:3], ivar[:3])
    assert np.allclose(t["e_teff_cv"], np.sqrt(floor[0] ** 2 + (a[0] / t["snr"]) ** 2))
    lo, hi = m.error_law_["snr_range"]
    assert list(t["e_cv_extrapolated"]) == [not (lo <= s <= hi) for s in t["snr"]]


# --------------------------------------------------------------------- persistence
def test_save_load_round_trip(trained, tmp_path):
    model, _ = trained
    flux, ivar, _, _ = make_spectra(10, seed=11)
    model.error_law_ = {"a": np.array([300.0, 0.1, 0.2]), "b": np.array([-0.5, -0.3, -0.2]),
                        "cov": np.zeros((3, 2, 2)), "snr_range": (10.0, 100.0), "n_bins": 5}
    path = tmp_path / "model.npz"
    model.save(path)
    again = SLAM.load(path)
    t1 = model.predict_table(flux, ivar)
    t2 = again.predict_table(flux, ivar)
    for name in t1.colnames:
        assert np.array_equal(np.asarray(t1[name]), np.asarray(t2[name]), equal_nan=True), name
    assert again.get_params() == model.get_params()
    assert again.label_names_ == LABELS and again.label_units_ == UNITS
    with np.load(path, allow_pickle=False) as z:        # no object arrays anywhere
        meta = json.loads(str(z["metadata"][()]))
    assert meta["format"] == modelfile.FORMAT_NAME and meta["format_version"] == modelfile.FORMAT_VERSION
    model.error_law_ = None


def test_corrupted_and_future_model_files(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "model.npz"
    model.save(path)
    data = path.read_bytes()
    trunc = tmp_path / "truncated.npz"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(modelfile.ModelFileError, match="corrupted or truncated"):
        SLAM.load(trunc)
    # future format version
    future = tmp_path / "future.npz"
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["metadata"][()]))
    meta["format_version"] = modelfile.FORMAT_VERSION + 1
    arrays["metadata"] = np.array(json.dumps(meta))
    np.savez(future, **arrays)
    with pytest.raises(modelfile.ModelFileError, match="newer than this mdslam"):
        SLAM.load(future)
    # a member missing
    partial = tmp_path / "partial.npz"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(partial, "w") as zout:
        for item in zin.infolist():
            if item.filename != "dual_coef.npy":
                zout.writestr(item, zin.read(item.filename))
    with pytest.raises(modelfile.ModelFileError, match="dual_coef"):
        SLAM.load(partial)
    with pytest.raises(FileNotFoundError):
        SLAM.load(tmp_path / "nope.npz")


# --------------------------------------------------------------------- sklearn contract
def test_sklearn_estimator_contract(trained):
    model, _ = trained
    p = model.get_params()
    assert p["C"] == (1.0, 10.0) and p["cv"] == 4
    c = clone(model)
    assert not hasattr(c, "dual_coef_")
    assert c.get_params() == p
    c.set_params(C=(2.0,), low_snr=3.0)
    assert c.C == (2.0,) and c.low_snr == 3.0
    with pytest.raises(AttributeError, match="not fitted"):
        c.predict(np.ones((1, 48)))
    flux, ivar, lab, _ = make_spectra(60, n_pix=10, seed=12)
    assert c.set_params(epsilon=(0.05,), gamma=(0.5,), cv=3).fit(flux, lab) is c
    assert hasattr(c, "cv_mse_") and c.cv_mse_grid_.shape == (10, 1, 1, 1)


# --------------------------------------------------------------------- command line
def test_cli_train_and_predict(tmp_path):
    from astropy.table import Table

    from mdslam import cli

    flux, ivar, lab, _ = make_spectra(160, n_pix=20, seed=13)
    ids = np.array([f"s{i}" for i in range(160)])
    np.savez(tmp_path / "train.npz", flux=flux, ivar=ivar, wavelength=np.linspace(6000, 9000, 20), id=ids)
    t = Table({"ID": ids[::-1], "teff": lab[::-1, 0], "logg": lab[::-1, 1], "fe_h": lab[::-1, 2]})
    t["teff"].unit = "K"
    t.write(tmp_path / "labels.fits")
    model = tmp_path / "model.npz"
    assert cli.main(["train", "--spectra", str(tmp_path / "train.npz"), "--labels", str(tmp_path / "labels.fits"),
                     "--label-cols", "teff,logg,fe_h", "--id-col", "ID", "--out", str(model),
                     "--C", "1,10", "--epsilon", "0.02", "--gamma", "0.3", "--cv", "3"]) == 0
    f2, i2, lab2, _ = make_spectra(8, n_pix=20, seed=14)
    np.savez(tmp_path / "good.npz", flux=f2, ivar=i2)
    np.savez(tmp_path / "short.npz", flux=f2[:2, :15], ivar=i2[:2, :15])
    (tmp_path / "broken.npz").write_bytes(b"not a zip file")
    cat = tmp_path / "cat.fits"
    assert cli.main(["predict", "--model", str(model), "--out", str(cat), str(tmp_path / "good.npz"),
                     str(tmp_path / "short.npz"), str(tmp_path / "broken.npz")]) == 0
    out = Table.read(cat)
    assert len(out) == 11
    assert {"id", "file", "snr", "teff", "e_teff", "e_teff_cv", "flag"} <= set(out.colnames)
    assert np.all(out["flag"][:8] == 0) and np.all(out["flag"][8:] & LabelFlag.FAILED)
    assert np.sqrt(np.mean((np.asarray(out["teff"][:8]) - lab2[:, 0]) ** 2)) < 60
    assert str(out["teff"].unit) == "K"


def test_predict_table_accepts_spectra_container(trained):
    from mdslam.spectra import Spectra

    model, _ = trained
    flux, ivar, lab, _ = make_spectra(5, seed=15)
    mask = np.zeros_like(flux, bool)
    mask[0, :30] = True                                     # masked pixels drop out
    sp = Spectra(model.wavelength_, flux, ivar, mask)
    tab = model.predict_table(sp)
    assert list(tab["id"]) == ["0", "1", "2", "3", "4"]
    assert tab["n_good_pixels"][0] == 18 and np.all(tab["n_good_pixels"][1:] == 48)
    assert np.all(np.abs(tab["teff"] - lab[:, 0]) < 150)
    off = Spectra(model.wavelength_ + 1.0, flux, ivar, mask)
    with pytest.raises(ValueError, match="not on the model wavelength grid"):
        model.predict_table(off)


# --------------------------------------------------------------------- scikit-learn contract (cont.)
def test_set_params_on_fitted_model_drops_the_prediction_cache(trained):
    """A changed predict-time parameter is used by the next predict (no refit, no stale cache)."""
    model, _ = trained
    m = copy.deepcopy(model).set_params(quick_grid=None)
    flux, ivar, _, _ = make_spectra(5, seed=13)
    m.predict(flux, ivar)
    n_start = quick_grid(m)[0].shape[0]
    assert n_start == model.n_train_                        # training labels only
    m.set_params(quick_grid=4)
    assert quick_grid(m)[0].shape[0] == model.n_train_ + 4**3
    assert np.array_equal(m.dual_coef_, model.dual_coef_)   # fitted state kept


def test_n_jobs_follows_scikit_learn():
    """n_jobs=None is one thread (scikit-learn/joblib), -1 all CPUs, 0 an error."""
    import joblib

    from mdslam.slam import _n_workers
    assert _n_workers(None) == 1
    assert _n_workers(3) == 3
    assert _n_workers(-1) == joblib.cpu_count()
    with pytest.raises(ValueError, match="n_jobs=0"):
        _n_workers(0)


def test_not_fitted_error_is_sklearns():
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError, match="not fitted"):
        SLAM().predict(np.ones((1, 4)))


# --------------------------------------------------------------------- posterior (Li 2021 eq. 2)
V1_FILE = Path(__file__).parent / "data" / "slam_model_v1.npz"
#: Labels predicted by the code that wrote V1_FILE (format version 1, maximum likelihood) for
#: make_spectra(5, n_pix=16, seed=22), recorded when the file was written.
V1_PREDICTIONS = np.array([[3458.9295411822195, 5.0946197632696633, -0.14544422720289651],
                           [3324.8725646619082, 4.9952129684387652, -0.72981611531767643],
                           [3207.7289137664902, 5.0229634584322582, -0.21683654025257684],
                           [3745.4996235764397, 4.5270059302569914, -0.37856370847730181],
                           [3555.9320663666622, 4.8302162752960163, -0.49535220634214716]])


def test_model_file_of_format_version_1_loads_with_flat_prior():
    with np.load(V1_FILE, allow_pickle=False) as z:
        assert json.loads(str(z["metadata"][()]))["format_version"] == 1
    model = SLAM.load(V1_FILE)
    assert model.prior is None and model.chi2_scale_ == 1.0 and model.chi2_scale_cv_ is None
    flux, ivar, _, _ = make_spectra(5, n_pix=16, seed=22)
    t = model.predict_table(flux, ivar)
    assert "teff_ml" not in t.colnames and t.meta["HEADLINE"].startswith("maximum likelihood")
    assert np.allclose(np.column_stack([t[n] for n in LABELS]), V1_PREDICTIONS, rtol=1e-10)


@pytest.fixture(scope="module")
def trained_prior():
    """A model with the training prior, trained on spectra of SNR 5-100."""
    rng = np.random.default_rng(0)
    flux, ivar, lab, _ = make_spectra(240, seed=1, snr=rng.uniform(5, 100, 240))
    model = SLAM(C=(1.0, 10.0), epsilon=(0.01, 0.05), gamma=(0.1, 0.5), cv=4, random_state=3, n_jobs=1,
                 prior="training")
    model.fit(flux, lab, ivar, label_names=LABELS, label_units=UNITS)
    return model


def test_posterior_mean_beats_maximum_likelihood_at_low_snr(trained_prior):
    """Known truth: at SNR 5-20 the posterior mean (training prior) has a lower RMS than ML."""
    model = trained_prior
    assert model.chi2_scale_ in model.chi2_scale_cv_["grid"]
    assert model.chi2_scale_ == model.chi2_scale_cv_["grid"][np.argmin(model.chi2_scale_cv_["score"])]
    flux, ivar, lab, _ = make_spectra(150, seed=7, snr=np.random.default_rng(1).uniform(5, 20, 150))
    t = model.predict_table(flux, ivar)
    assert t.meta["HEADLINE"].startswith("posterior mean")
    assert np.array_equal(np.column_stack([t[n] for n in LABELS]), model.predict(flux, ivar), equal_nan=True)
    for li, n in enumerate(LABELS):
        rms_post = np.sqrt(np.mean((t[n] - lab[:, li]) ** 2))
        rms_ml = np.sqrt(np.mean((t[f"{n}_ml"] - lab[:, li]) ** 2))
        assert rms_post < rms_ml, (n, rms_post, rms_ml)
        z = (t[n] - lab[:, li]) / t[f"e_{n}"]
        assert 0.6 < np.std(z) < 1.5, (n, np.std(z))       # calibrated on CV, checked on new stars


def test_domain_flags_come_from_the_likelihood_not_the_prior():
    """Known truth: stars far below the training Teff range keep OUTSIDE_DOMAIN with the prior on.

    Trained on Teff > 3500 K only; stars at 3100-3300 K (truth) get maximum-likelihood Teff below
    the domain, while the training prior pulls their posterior mean into it (the likelihood is
    nearly flat where the RBF model extrapolates).  The flag must follow the ML labels (Li 2021
    eq. 3), as a flag on the posterior mean (eq. 2) would pass these stars as in-domain.
    """
    rng = np.random.default_rng(0)
    flux, ivar, lab, _ = make_spectra(240, seed=1, snr=rng.uniform(20, 100, 240))
    keep = lab[:, 0] > 3500
    model = SLAM(C=(1.0, 10.0), epsilon=(0.01, 0.05), gamma=(0.1, 0.5), cv=4, random_state=3, n_jobs=1,
                 prior="training")
    model.fit(flux[keep], lab[keep], ivar[keep], label_names=LABELS, label_units=UNITS)
    lo, hi = model.domain_array()[0]
    f2, iv2, lab2, _ = make_spectra(60, seed=5, snr=20.0)
    t = model.predict_table(f2, iv2)
    teff_bit = (np.asarray(t["flag"]) & int(LabelFlag.OUTSIDE_DOMAIN)) > 0
    ml = np.asarray(t["teff_ml"])
    assert np.array_equal(teff_bit, (ml < lo) | (ml > hi))              # the rule: ML labels
    far = lab2[:, 0] < 3300                                              # truth 200+ K below the domain
    assert far.sum() >= 5 and np.all(ml[far] < lo) and teff_bit[far].all()
    pulled = far & (np.asarray(t["teff"]) >= lo)
    assert pulled.sum() >= 0.8 * far.sum()                               # the posterior mean is inside
    inside = (lab2[:, 0] > 3600) & (lab2[:, 0] < 4000)
    assert teff_bit[inside].mean() < 0.2                                 # in-domain stars stay unflagged


def test_posterior_settings_round_trip_and_flat_prior(trained_prior, tmp_path):
    model = trained_prior
    path = tmp_path / "post.npz"
    model.save(path)
    again = SLAM.load(path)
    assert again.prior == "training" and again.chi2_scale_ == model.chi2_scale_
    assert np.array_equal(again.posterior_std_scale_, model.posterior_std_scale_)
    flux, ivar, _, _ = make_spectra(6, seed=17)
    t1, t2 = model.predict_table(flux, ivar), again.predict_table(flux, ivar)
    for c in t1.colnames:
        assert np.array_equal(np.asarray(t1[c]), np.asarray(t2[c]), equal_nan=True), c
    # a flat prior: the MAP is the maximum-likelihood point (inside the training box)
    flat = copy.deepcopy(model).set_params(prior="flat", chi2_scale=1.0)
    t = flat.predict_table(flux, ivar)
    for n in LABELS:
        assert np.allclose(t[f"{n}_map"], t[f"{n}_ml"], rtol=1e-6)
    # a callable prior predicts but cannot be saved
    call = copy.deepcopy(model).set_params(prior=lambda lab: -0.5 * ((lab[:, 0] - 3600) / 300) ** 2)
    assert np.all(np.isfinite(call.predict(flux, ivar)))
    with pytest.raises(ValueError, match="callable prior cannot be saved"):
        call.save(tmp_path / "call.npz")


def test_prior_needs_a_chosen_scale(trained):
    """A model fitted without a prior has no CV chi2 scale: asking for one is a clear error."""
    model, _ = trained
    m = copy.deepcopy(model).set_params(prior="training")
    with pytest.raises(ValueError, match="chose no chi2 scale"):
        m.predict(np.ones((1, 48)))
    assert np.all(np.isfinite(m.set_params(chi2_scale=3.0).predict(make_spectra(2, seed=3)[0])))


def test_cv_eigenvalue_cut_scales_with_the_largest_C():
    """The CV kernels' eigenvalue cut is 1e-6 / max(C) within [1e-8, 1e-7] (by hand)."""
    from mdslam.slam.training import _cv_rel_cut

    assert _cv_rel_cut(np.array([1.0, 10.0])) == pytest.approx(1e-7)
    assert _cv_rel_cut(np.array([0.1])) == pytest.approx(1e-7)
    assert _cv_rel_cut(np.array([1.0, 30.0])) == pytest.approx(1e-6 / 30)
    assert _cv_rel_cut(np.array([1.0, 1000.0])) == pytest.approx(1e-8)
