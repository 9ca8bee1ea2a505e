"""The correlated likelihood's CV: each fold's noise model must not have seen the fold's own stars.

The chi2 scale and the posterior-std calibration of ``SLAM(likelihood="correlated")`` are
measured on the CV folds (:func:`mdslam.slam.cv.fit_likelihood_scale`), and the catalogue's CV
labels of the training stars come from the same folds (:func:`mdslam.slam.cv.cv_predict`).  Both
are honest only if a held-out star meets the noise covariance of its fold as a new star would.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from test_noise import make_correlated

from mdslam.slam import SLAM, cv, fit_fixed, noise
from mdslam.slam.training import _iter_folds


class _ZeroModel:
    """A fold model whose forward model is 0, so the CV residuals are the fluxes themselves."""

    def __init__(self, n_pix):
        self.pixel_usable_ = np.ones(n_pix, bool)

    def predict_flux(self, labels):
        return np.zeros((len(labels), self.pixel_usable_.size))

    def _reset_cache(self):
        pass


def _mean_chi2(R, V, d):
    """Mean of ``r^T (V V^T + diag d)^-1 r`` over the rows of ``R``, by numpy.linalg.solve."""
    S = noise.residual_covariance(V, d)
    return float(np.mean(np.einsum("ij,ji->i", R, np.linalg.solve(S, R.T))))


def test_fold_noise_models_meet_held_out_stars_as_new_stars():
    """Known truth: residuals drawn from a rank-4-plus-diagonal Gaussian.  Under the noise model of
    a fold, that fold's held-out stars and fresh stars from the same Gaussian are exchangeable, so
    their mean chi2 agree; a noise model fitted with the held-out stars in it (the whole training
    set's, as every fold had before) fits them better than fresh stars (held-out / fresh ~0.85)."""
    rng = np.random.default_rng(0)
    n, p, k = 80, 40, 4
    V = rng.normal(0, 1, (p, k)) * np.linspace(1.0, 0.3, k)
    d = rng.uniform(0.2, 0.5, p)

    def draw(m):
        return rng.normal(0, 1, (m, k)) @ V.T + rng.normal(0, 1, (m, p)) * np.sqrt(d)

    R, fresh = draw(n), draw(4000)
    folds = _iter_folds(n, 5, 0)
    model = types.SimpleNamespace(pixel_usable_=np.ones(p, bool), random_state=0)
    subs = [(_ZeroModel(p), te) for _, te in folds]
    cv.fit_noise(model, subs, R, np.zeros((n, 2)), np.ones((n, p), bool), folds)
    assert 3 <= model.noise_rank_cv_["rank"] <= 10
    held = np.concatenate([np.einsum("ij,ji->i", R[te], np.linalg.solve(
        noise.residual_covariance(s.noise_factor_, s.noise_diag_), R[te].T)) for s, te in subs])
    new = np.mean([_mean_chi2(fresh, s.noise_factor_, s.noise_diag_) for s, _ in subs])
    # the mean of 80 chi2 values of 40 dof: relative standard error ~0.03
    assert 0.9 < held.mean() / new < 1.1, (held.mean() / p, new / p)
    whole = _mean_chi2(R, model.noise_factor_, model.noise_diag_)          # the leaky reference
    assert whole / _mean_chi2(fresh, model.noise_factor_, model.noise_diag_) < 0.92
    for (s, _), (tr, _) in zip(subs, folds, strict=True):                  # each fold: its training stars only
        Vk, dk, _ = noise.fit_factor_model(R[tr], [], ranks=(model.noise_rank_cv_["rank"],))
        assert np.array_equal(s.noise_factor_, Vk) and np.array_equal(s.noise_diag_, dk)


@pytest.mark.slow
def test_correlated_cv_labels_use_fold_noise_models():
    """``cv_predict`` of a correlated model: every fold's noise model is the one its likelihood CV
    used (fitted without the fold), not the model's own; the CV labels differ from those with the
    model's noise model only through that."""
    flux, ivar, lab = make_correlated(160, seed=4)
    grid = dict(C=(10.0,), epsilon=(0.01,), gamma=(0.3,))
    ind = SLAM(cv=4, random_state=3, n_jobs=1, **grid).fit(flux, lab, ivar, label_names=["teff", "fe_h"])
    hyper = {"C": ind.C_, "epsilon": ind.epsilon_, "gamma": ind.gamma_, "cv_mse_scaled": ind.cv_mse_scaled_,
             "cv_md_scaled": ind.cv_md_scaled_, "usable": ind.pixel_usable_}
    cor = fit_fixed(SLAM(cv=4, random_state=3, n_jobs=1, likelihood="correlated", **grid), flux, lab, ivar,
                    hyper, label_names=["teff", "fe_h"])
    t = cor.cv_predict(flux, lab, ivar)
    folds = _iter_folds(len(lab), 4, 3)
    subs = [(cv.refit_fixed(cor, flux[tr], lab[tr], np.ones_like(flux, bool)[tr]), te) for tr, te in folds]
    R = cv.cv_residuals(subs, flux, lab, np.ones_like(flux, bool), cor.pixel_usable_)
    cv.fold_noise(subs, folds, R, cor.noise_rank_cv_["rank"], 3)
    for s, te in subs:
        p = s.predict(flux[te], ivar[te])
        assert np.allclose(p, np.column_stack([t["teff"][te], t["fe_h"][te]]), rtol=1e-9, atol=0)
        assert not np.array_equal(s.noise_factor_, cor.noise_factor_)
