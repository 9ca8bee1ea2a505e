"""Validation statistics: CV bias/scatter vs SNR, comparison statistics, pairs, clusters.

Qiu et al. 2025 eqs. 4-5 (CV bias and CV scatter; eq. 5 is read as the
standard deviation ``sqrt(mean((theta_SLAM - theta)^2))``, the printed 1/m
outside the root is a slip), the equal-count SNR bins of their Fig. 5 and the
power-law fits of eqs. 6-8.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from scipy.optimize import curve_fit

__all__ = ["cv_bias", "cv_scatter", "binned_bias_scatter", "fit_power_law"]


def cv_bias(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """CV bias, Qiu eq. 4: mean of ``pred - truth`` along axis 0 (ignores NaN)."""
    return np.nanmean(np.asarray(pred, float) - np.asarray(truth, float), axis=0)


def cv_scatter(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """CV scatter, Qiu eq. 5 read as a standard deviation: ``sqrt(mean((pred - truth)^2))``."""
    d = np.asarray(pred, float) - np.asarray(truth, float)
    return np.sqrt(np.nanmean(d**2, axis=0))


def binned_bias_scatter(snr: np.ndarray, pred: np.ndarray, truth: np.ndarray, n_bins: int = 6,
                        min_per_bin: int = 20) -> Table:
    """CV bias and scatter in equal-count SNR bins (Qiu 2025 Fig. 5).

    Parameters
    ----------
    snr : (n,) array
        Spectral SNR of each star.
    pred, truth : (n,) or (n, n_labels) arrays
        Predicted (e.g. k-fold CV) and reference labels.
    n_bins : int
        Number of equal-count bins; reduced so that every bin holds at least
        ``min_per_bin`` stars.

    Returns
    -------
    Table with columns ``snr_lo``, ``snr_hi``, ``snr_median``, ``n``, ``bias``
    and ``scatter`` (the last two of shape (n_bins, n_labels) when 2-D input).
    """
    snr = np.asarray(snr, float)
    pred = np.asarray(pred, float)
    truth = np.asarray(truth, float)
    ok = np.isfinite(snr)
    snr, pred, truth = snr[ok], pred[ok], truth[ok]
    n_bins = int(max(1, min(n_bins, len(snr) // max(min_per_bin, 1))))
    order = np.argsort(snr)
    groups = np.array_split(order, n_bins)
    rows = []
    for g in groups:
        rows.append((snr[g].min(), snr[g].max(), np.median(snr[g]), len(g),
                     cv_bias(pred[g], truth[g]), cv_scatter(pred[g], truth[g])))
    return Table(rows=rows, names=("snr_lo", "snr_hi", "snr_median", "n", "bias", "scatter"))


def fit_power_law(x: np.ndarray, y: np.ndarray, sigma: np.ndarray | None = None) -> tuple[float, float, np.ndarray]:
    """Fit ``y = a * x**b`` (Qiu 2025 eqs. 6-8) by least squares in linear space.

    Returns ``(a, b, cov)`` with ``cov`` the 2x2 covariance of (a, b).
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[ok], y[ok]
    if len(x) < 2:
        raise ValueError(f"need at least two positive points to fit a power law, got {len(x)}")
    b0, loga0 = np.polyfit(np.log(x), np.log(y), 1)
    p, cov = curve_fit(lambda t, a, b: a * t**b, x, y, p0=(np.exp(loga0), b0),
                       sigma=None if sigma is None else np.asarray(sigma, float)[ok], maxfev=10000)
    return float(p[0]), float(p[1]), cov
