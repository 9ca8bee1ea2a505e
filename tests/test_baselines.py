"""Baseline estimators: known truth recovered, same folds as SLAM, sklearn as the reference."""

from __future__ import annotations

import numpy as np
import pytest

from mdslam import baselines


def _quadratic_spectra(n=150, n_pix=40, noise=1e-3, seed=0):
    """Spectra exactly quadratic in two labels (the Cannon-like model's own form) plus noise."""
    rng = np.random.default_rng(seed)
    y = np.column_stack([rng.uniform(3200, 3900, n), rng.uniform(-0.6, 0.3, n)])
    t = (y[:, 0] - 3550) / 200
    f = y[:, 1] / 0.3
    w = np.linspace(0, 3, n_pix)
    flux = (1 + 0.05 * np.outer(t, np.sin(w)) + 0.03 * np.outer(f, np.cos(w))
            + 0.01 * np.outer(t**2, w / 3) + 0.01 * np.outer(t * f, 1 - w / 3))
    flux += rng.normal(0, noise, flux.shape)
    return flux, np.full(flux.shape, 1 / noise**2), y


def test_cannon_like_recovers_known_labels():
    flux, ivar, y = _quadratic_spectra()
    m = baselines.CannonLike().fit(flux[:100], y[:100], ivar[:100])
    np.testing.assert_allclose(m.predict_flux(y[100:]), flux[100:], atol=5e-3)
    pred = m.predict(flux[100:], ivar[100:])
    assert np.sqrt(np.mean((pred[:, 0] - y[100:, 0]) ** 2)) < 10.0   # K, of a 700 K range
    assert np.sqrt(np.mean((pred[:, 1] - y[100:, 1]) ** 2)) < 0.02   # dex, of a 0.9 dex range


def test_pca_ridge_is_sklearn_pipeline_and_learns_the_labels():
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    flux, ivar, y = _quadratic_spectra(noise=1e-3)
    m = baselines.PCARidge(n_components=5).fit(flux[:100], y[:100], ivar[:100])
    ref = make_pipeline(StandardScaler(), PCA(5), RidgeCV(alphas=baselines.RIDGE_ALPHAS)).fit(flux[:100], y[:100])
    np.testing.assert_allclose(m.predict(flux[100:], ivar[100:]), ref.predict(flux[100:]), rtol=1e-8)
    assert np.sqrt(np.mean((m.predict(flux[100:])[:, 0] - y[100:, 0]) ** 2)) < 30.0


def test_kfold_is_slams_split_and_cv_predict_is_out_of_fold():
    from sklearn.model_selection import KFold

    folds = baselines.kfold(50, 5, seed=3)
    ref = list(KFold(5, shuffle=True, random_state=3).split(np.zeros((50, 1))))
    assert all((a == c).all() and (b == d).all() for (a, b), (c, d) in zip(folds, ref, strict=True))
    assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(50))

    class Memorise:  # predicts the mean label of its training part: out-of-fold by construction
        def fit(self, flux, y, ivar=None):
            self.mean_ = y.mean(axis=0)
            return self

        def predict(self, flux, ivar=None):
            return np.tile(self.mean_, (len(flux), 1))

    y = np.arange(50.0)[:, None]
    p = baselines.cv_predict(Memorise(), np.zeros((50, 3)), y, None, folds)
    for tr, te in folds:
        assert p[te] == pytest.approx(np.full((len(te), 1), y[tr].mean()))
