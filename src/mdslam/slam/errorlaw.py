"""The empirical uncertainty law of the CV labels: ``sigma^2 = floor^2 + (a / SNR)^2`` per label.

Qiu et al. 2025 (eqs. 6-8) fit the CV scatter in SNR bins by a power law
``a * SNR**b``; with ``b`` free that law can grow with SNR and has no floor.
The law fitted here (:func:`mdslam.validation.fit_floor_law`, ``a, floor >= 0``)
never increases with SNR and tends to a floor at high SNR; it is used only
inside the SNR range it was fitted on (:func:`error_law_outside` flags the
rest).  Model files written with the power law still load and evaluate it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy.table import Table

from .. import validation

#: ``kind`` of a law fitted by :func:`fit_error_law`.
FLOOR = "floor"


def fit_error_law(snr: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, label_names: Sequence[str], *,
                  n_bins: int = 6, min_per_bin: int = 20) -> tuple[dict, Table]:
    """Fit ``sigma^2 = floor^2 + (a / SNR)^2`` per label to the CV scatter in equal-count SNR bins.

    Parameters
    ----------
    snr : (n,) array
        Spectral SNR.
    y_true, y_pred : (n, n_label) arrays
        True and CV-predicted labels, physical units.
    label_names : sequence of str
        The label names (stored in the table's ``meta``).
    n_bins, min_per_bin : int
        Equal-count SNR bins (:func:`mdslam.validation.fit_floor_laws`);
        Qiu: at least ~20 stars per bin.

    Returns
    -------
    law : dict
        ``kind`` (``"floor"``), ``a`` (label unit x SNR) and ``floor`` (label
        unit), each (n_label,); ``cov`` (n_label, 2, 2) of (a, floor);
        ``snr_range`` (the SNR range of the binned stars) and ``n_bins``.
    table : Table
        The binned table (``snr_lo``, ``snr_hi``, ``snr_median``, ``n``, ``bias``,
        ``scatter``), with ``a``, ``floor`` and their errors in ``meta``.

    Raises
    ------
    ValueError
        Fewer than two SNR bins with ``min_per_bin`` stars.
    """
    names = list(label_names)
    snr = np.asarray(snr, float).ravel()
    yt = np.array(y_true, float, ndmin=2).reshape(snr.size, len(names))
    yp = np.array(y_pred, float, ndmin=2).reshape(snr.size, len(names))
    tab, laws = validation.fit_floor_laws(snr, yp, yt, names, n_bins=n_bins, min_per_bin=min_per_bin)
    law = {"kind": FLOOR,
           "a": np.array([laws[n].a for n in names]),
           "floor": np.array([laws[n].floor for n in names]),
           "cov": np.array([laws[n].cov for n in names]).reshape(len(names), 2, 2),
           "snr_range": laws[names[0]].snr_range, "n_bins": len(tab)}
    tab.meta.update({"label_names": names, "a": law["a"].tolist(), "floor": law["floor"].tolist(),
                     "a_err": [laws[n].a_err for n in names], "floor_err": [laws[n].floor_err for n in names],
                     "snr_range": list(law["snr_range"])})
    return law, tab


def error_law_sigma(law: dict | None, snr: np.ndarray, label_index: int) -> np.ndarray:
    """Uncertainty of one label from its law (NaN everywhere without a law).

    Parameters
    ----------
    law : dict or None
        As returned by :func:`fit_error_law` (``kind="floor"``), or a power law
        ``a * SNR**b`` (``a``, ``b``) of a model file written before the floor law.
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
        if law.get("kind") == FLOOR:
            return np.hypot(law["floor"][label_index], law["a"][label_index] / snr)
        return law["a"][label_index] * snr ** law["b"][label_index]


def error_law_outside(law: dict | None, snr: np.ndarray) -> np.ndarray:
    """True where ``snr`` is outside the SNR range the law was fitted on (everywhere without a law).

    Parameters
    ----------
    law : dict or None
        As returned by :func:`fit_error_law`.
    snr : (n,) array

    Returns
    -------
    (n,) bool array
    """
    snr = np.asarray(snr, float)
    if law is None:
        return np.ones(snr.shape, bool)
    lo, hi = law["snr_range"]
    return ~((snr >= lo) & (snr <= hi))
