"""How far to trust a SLAM label: SNR, reduced chi2, the label domain and the flag bits.

The bits are :class:`mdslam.flags.LabelFlag`; the fit-quality thresholds come
from :mod:`mdslam.checks`.  Pure functions of arrays (or of a fitted model's state).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import checks
from ..flags import LabelFlag, label_flag_meanings


def describe_flag(flag: int, label_names: Sequence[str] = ()) -> list[str]:
    """Human-readable meanings of the bits set in ``flag``.

    Parameters
    ----------
    flag : int
        A value of the ``flag`` column of :meth:`mdslam.slam.SLAM.predict_table`.
    label_names : sequence of str
        The model's label names, to name the "outside domain" bits.

    Returns
    -------
    list of str, one per bit set.
    """
    return label_flag_meanings(flag, label_names)


def rchi2(chi2: np.ndarray, n_good: np.ndarray, n_label: int) -> np.ndarray:
    """Reduced chi2 ``chi2 / max(n_good - n_label, 1)``, shape (n,)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(chi2, float) / np.maximum(np.asarray(n_good) - n_label, 1)


def snr(flux: np.ndarray, ok: np.ndarray, ivar: np.ndarray | None) -> np.ndarray:
    """Median ``|flux| sqrt(ivar)`` over the pixels ``ok``, per spectrum.

    Parameters
    ----------
    flux, ok, ivar : (n, n_pix) arrays (flux, bool, flux^-2); ``ivar`` may be None.

    Returns
    -------
    (n,) array; NaN without ivar or without a good pixel.
    """
    if ivar is None:
        return np.full(flux.shape[0], np.nan)
    with np.errstate(invalid="ignore"):
        s = np.where(ok & (ivar > 0), np.abs(flux) * np.sqrt(np.where(ivar > 0, ivar, 0)), np.nan)
    return checks.row_nanmedian(s)               # np.nanmedian's numbers in one sort (NaN: no good pixel)


def input_flags(fittable: np.ndarray, n_good: np.ndarray, snr: np.ndarray, *, min_good: float,
                low_snr: float) -> np.ndarray:
    """FAILED (not fittable), FEW_PIXELS and LOW_SNR bits per spectrum.

    Parameters
    ----------
    fittable : (n,) bool array
    n_good : (n,) int array
        Pixels with a positive likelihood weight.
    snr : (n,) array
    min_good : float
        Fewer good pixels than this: FEW_PIXELS.
    low_snr : float
        Finite SNR below this: LOW_SNR.

    Returns
    -------
    (n,) int64 array of :class:`mdslam.flags.LabelFlag` bits.
    """
    flag = np.zeros(fittable.size, np.int64)
    flag[~fittable] |= LabelFlag.FAILED
    flag[n_good < min_good] |= LabelFlag.FEW_PIXELS
    flag[np.isfinite(snr) & (snr < low_snr)] |= LabelFlag.LOW_SNR
    return flag


def domain_array(training_domain: np.ndarray, domain: Any, label_names: Sequence[str]) -> np.ndarray:
    """The label domain for the outside-domain flags, physical units.

    Parameters
    ----------
    training_domain : (n_label, 2) array
        Min and max of the training labels.
    domain : None, dict or (n_label, 2) array
        The user's domain: None (the training domain), a dict keyed by label
        name (the labels it names replace theirs) or a full array.
    label_names : sequence of str

    Returns
    -------
    (n_label, 2) array.

    Raises
    ------
    ValueError
        An array ``domain`` of the wrong shape.
    """
    dom = np.array(training_domain, float, copy=True)
    if domain is None:
        return dom
    if isinstance(domain, dict):
        for li, name in enumerate(label_names):
            if name in domain:
                dom[li] = np.asarray(domain[name], float)
        return dom
    user = np.asarray(domain, float)
    if user.shape != dom.shape:
        raise ValueError(f"domain must be ({dom.shape[0]}, 2), got {user.shape}")
    return user


def domain_flags(labels: np.ndarray, domain: np.ndarray) -> np.ndarray:
    """OUTSIDE_DOMAIN bits (one per label) of (n, L) physical labels against an (L, 2) domain, (n,) int64."""
    flag = np.zeros(labels.shape[0], np.int64)
    with np.errstate(invalid="ignore"):
        for li in range(labels.shape[1]):
            out_l = (labels[:, li] < domain[li, 0]) | (labels[:, li] > domain[li, 1])
            flag[out_l] |= LabelFlag.OUTSIDE_DOMAIN << li
    return flag


def fit_quality_flags(model: Any, chi2: np.ndarray, n_good: np.ndarray, labels: np.ndarray,
                      flux: np.ndarray) -> np.ndarray:
    """BAD_FIT, FAR_FROM_TRAINING and NOT_NORMALISED bits (:func:`mdslam.checks.fit_flags`).

    Parameters
    ----------
    model : SLAM
        A fitted model (its thresholds; ``inf`` for models saved before they existed).
    chi2, n_good : (n,) arrays
    labels : (n, n_label) array
        Maximum-likelihood labels, physical units.
    flux : (n, n_pix) array

    Returns
    -------
    (n,) int64 array.
    """
    usable = model.pixel_usable_
    return checks.fit_flags(
        rchi2(chi2, n_good, model.label_mean_.size), (labels - model.label_mean_) / model.label_scale_,
        model.X_train_, flux, rchi2_threshold=getattr(model, "rchi2_threshold_", np.inf),
        knn_threshold=getattr(model, "knn_threshold_", np.inf), knn_k=getattr(model, "knn_k_", checks.KNN_K),
        flux_level=float(np.median(model.flux_mean_[usable])) if usable.any() else np.nan)
