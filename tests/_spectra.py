"""Test data and references shared by the SLAM tests: mock spectra (sigmoid lines in 3 labels), libsvm CV-MSE grids."""

from __future__ import annotations

import numpy as np

LABELS = ["teff", "logg", "fe_h"]


def sigmoid_spectra(n, n_pix=40, snr=80.0, seed=0):
    """Mock spectra: sigmoid line depths, smooth in 3 labels, Gaussian noise. flux, ivar (n, n_pix), labels (n, 3)."""
    rng = np.random.default_rng(seed)
    lab = np.column_stack([rng.uniform(3100, 4100, n), rng.uniform(4.5, 5.1, n), rng.uniform(-0.8, 0.4, n)])
    t, g, m = (lab[:, 0:1] - 3600) / 500, (lab[:, 1:2] - 4.8) / 0.3, (lab[:, 2:3] + 0.2) / 0.6
    c = np.random.default_rng(99).normal(0, 1, (5, n_pix))
    z = c[0] * t + 0.6 * c[1] * g + 0.8 * c[2] * m + 0.4 * c[3] * t * m + 0.3 * c[4] * t**2
    flux = 1.0 - 0.5 / (1.0 + np.exp(-z)) + rng.normal(0, 1 / snr, z.shape)
    return flux, np.full(z.shape, snr**2), lab


def sigmoid_lines(n, n_pix, seed, coef_seed):
    """n stars x n_pix pixels of smooth sigmoid lines in 3 standardised labels (uniform in +-1.5), SNR 100.

    Returns flux (n, n_pix) and labels (n, 3).
    """
    rng = np.random.default_rng(seed)
    labels = rng.uniform(-1.5, 1.5, (n, 3))
    c = np.random.default_rng(coef_seed).normal(0, 1, (3, n_pix))
    z = c[0] * labels[:, :1] + 0.6 * c[1] * labels[:, 1:2] + 0.4 * c[2] * labels[:, :1] * labels[:, 2:3]
    flux = 1.0 - 0.5 / (1.0 + np.exp(-z)) + rng.normal(0, 0.01, z.shape)
    return flux, labels


def libsvm_cv_mse_grid(X, Y, folds, grid):
    """The independent reference: CV-MSE of every pixel and (C, epsilon, gamma) of ``grid`` by libsvm
    (sklearn's SVR, tol 1e-7) over ``folds``; shape (n_pix, n_C, n_epsilon, n_gamma)."""
    from sklearn.svm import SVR

    mse = np.zeros((Y.shape[1], len(grid["C"]), len(grid["epsilon"]), len(grid["gamma"])))
    for j in range(Y.shape[1]):
        for ic, C in enumerate(grid["C"]):
            for ie, e in enumerate(grid["epsilon"]):
                for ig, g in enumerate(grid["gamma"]):
                    sq = [(SVR(C=C, epsilon=e, gamma=g, tol=1e-7).fit(X[tr], Y[tr, j]).predict(X[te]) - Y[te, j]) ** 2
                          for tr, te in folds]
                    mse[j, ic, ie, ig] = np.concatenate(sq).mean()
    return mse
