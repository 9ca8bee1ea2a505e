"""The empirical uncertainty law of Qiu et al. 2025 (eqs. 6-8): ``sigma = a * SNR**b`` per label.

The CV scatter of labels in equal-count SNR bins is fitted by a power law;
the law then gives each new spectrum an uncertainty from its SNR alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy.table import Table

from .. import validation


def fit_error_law(snr: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str], *,
                  n_bins: int = 6, min_per_bin: int = 20) -> tuple[dict, Table]:
    """Fit ``sigma = a * SNR**b`` per label to the binned CV scatter.

    Parameters
    ----------
    snr : (n,) array
        Spectral SNR.
    y_true, y_pred : (n, n_label) arrays
        True and CV-predicted labels, physical units.
    label_names : sequence of str
        The label names (stored in the table's ``meta``).
    n_bins, min_per_bin : int
        Equal-count SNR bins (:func:`mdslam.validation.binned_bias_scatter`);
        Qiu: at least ~20 stars per bin.

    Returns
    -------
    law : dict
        ``a``, ``b`` (n_label,), ``cov`` (n_label, 2, 2) of (a, b), ``snr_range`` and ``n_bins``.
    table : Table
        The binned table (``snr_lo``, ``snr_hi``, ``snr_median``, ``n``, ``bias``,
        ``scatter``), with ``a``, ``b`` in ``meta``.

    Raises
    ------
    ValueError
        Fewer than two SNR bins with ``min_per_bin`` stars.
    """
    L = len(label_names)
    snr = np.asarray(snr, float).ravel()
    yt = np.array(y_true, float, ndmin=2).reshape(snr.size, L)
    yp = np.array(y_pred, float, ndmin=2).reshape(snr.size, L)
    ok = np.isfinite(snr) & np.all(np.isfinite(yt), axis=1) & np.all(np.isfinite(yp), axis=1)
    tab = validation.binned_bias_scatter(snr[ok], yp[ok], yt[ok], n_bins=n_bins, min_per_bin=min_per_bin)
    if len(tab) < 2:
        raise ValueError(f"only {len(tab)} SNR bin(s) with >= {min_per_bin} stars: cannot fit a power law")
    a = np.zeros(L)
    b = np.zeros(L)
    cov = np.zeros((L, 2, 2))
    scat = np.asarray(tab["scatter"]).reshape(len(tab), L)
    for li in range(L):
        a[li], b[li], cov[li] = validation.fit_power_law(np.asarray(tab["snr_median"]), scat[:, li])
    law = {"a": a, "b": b, "cov": cov,
           "snr_range": (float(tab["snr_lo"].min()), float(tab["snr_hi"].max())),
           "n_bins": len(tab)}
    tab.meta.update({"label_names": list(label_names), "a": a.tolist(), "b": b.tolist()})
    return law, tab


def error_law_sigma(law: dict | None, snr: np.ndarray, label_index: int) -> np.ndarray:
    """Uncertainty ``a * SNR**b`` of one label (NaN everywhere without a law).

    Parameters
    ----------
    law : dict or None
        As returned by :func:`fit_error_law`.
    snr : (n,) array
    label_index : int

    Returns
    -------
    (n,) array, the label's physical units.
    """
    snr = np.asarray(snr, float)
    if law is None:
        return np.full(snr.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return law["a"][label_index] * snr ** law["b"][label_index]
