"""What goes into SLAM: training arrays checked, spectra coerced to arrays, likelihood weights.

Pure functions of arrays; :class:`mdslam.slam.SLAM` calls them with its fitted state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def check_training(X: Any, y: Any, ivar: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training fluxes and labels as arrays, with the mask of usable pixels.

    Parameters
    ----------
    X : (n_star, n_pix) array-like
        Normalised training fluxes.
    y : (n_star, n_label) or (n_star,) array-like
        Training labels, physical units; all finite.
    ivar : (n_star, n_pix) array-like, optional
        Inverse variances (flux^-2); ``ivar <= 0`` or non-finite masks a pixel.

    Returns
    -------
    flux : (n_star, n_pix) array
        ``X`` with 0 where not good.
    labels : (n_star, n_label) array
    good : (n_star, n_pix) bool array
        Finite flux (and finite, positive ivar).

    Raises
    ------
    ValueError
        Shapes that do not match, or non-finite labels.
    """
    flux = np.array(X, dtype=float, ndmin=2)
    labels = np.array(y, dtype=float)
    if labels.ndim == 1:
        labels = labels[:, None]
    if flux.ndim != 2 or labels.ndim != 2:
        raise ValueError("X must be (n_star, n_pix) and y (n_star, n_label)")
    if flux.shape[0] != labels.shape[0]:
        raise ValueError(f"X has {flux.shape[0]} spectra but y has {labels.shape[0]} rows")
    if not np.all(np.isfinite(labels)):
        raise ValueError("training labels must be finite (drop stars with missing labels)")
    good = np.isfinite(flux)
    if ivar is not None:
        ivar = np.asarray(ivar, float)
        if ivar.shape != flux.shape:
            raise ValueError(f"ivar shape {ivar.shape} != flux shape {flux.shape}")
        good &= np.isfinite(ivar) & (ivar > 0)
    return np.where(good, flux, 0.0), labels, good


def from_spectra(sp: Any, ivar: Any, ids: Any, snr: Any,
                 wavelength: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    """Arrays from a :class:`mdslam.spectra.Spectra`, checking its grid against the model's.

    Parameters
    ----------
    sp : Spectra
        Spectra on one wavelength grid (Angstrom).
    ivar : (n_spec, n_pix) array or None
        Overrides ``sp.ivar`` when given; masked pixels get 0 either way.
    ids, snr : (n_spec,) sequences or None
        Default to ``sp.meta['id']`` and ``sp.meta['snr']`` when those columns exist.
    wavelength : (n_pix,) array
        The model's grid (Angstrom).

    Returns
    -------
    flux (n_spec, n_pix), ivar (n_spec, n_pix), ids, snr.

    Raises
    ------
    ValueError
        The spectra are not on ``wavelength``.
    """
    wave = np.asarray(sp.wavelength, float)
    if wave.ndim != 1 or wave.shape != wavelength.shape or not np.allclose(
            wave, wavelength, rtol=1e-9, atol=0):
        raise ValueError("spectra are not on the model wavelength grid "
                         f"({wave.shape} vs {wavelength.shape}); use mdslam.preprocess first")
    iv = np.asarray(sp.ivar, float) if ivar is None else ivar
    iv = np.where(np.asarray(sp.mask, bool), 0.0, iv)
    meta = sp.meta
    if ids is None and "id" in meta.colnames:
        ids = np.asarray(meta["id"])
    if snr is None and "snr" in meta.colnames:
        snr = np.asarray(meta["snr"], float)
    return np.asarray(sp.flux, float), iv, ids, snr


def coerce_spectra(X: Any, ivar: Any, n_pix: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Spectra to predict as one array, with the rows that could not be read.

    A 2-D array with the wrong number of pixels is an error; in a list of
    1-D spectra, the ones of the wrong length (or not numeric) are only flagged.

    Parameters
    ----------
    X : (n, n_pix) array or sequence of (n_pix,) arrays
        Normalised fluxes.
    ivar : same shape as ``X``, or None
        Inverse variances (flux^-2).
    n_pix : int
        Pixels of the model grid.

    Returns
    -------
    flux : (n, n_pix) array
        NaN rows for the flagged spectra.
    ivar : (n, n_pix) array or None
    bad_input : (n,) bool array

    Raises
    ------
    ValueError
        A 2-D ``X`` (or its ``ivar``) of the wrong shape.
    """
    if not isinstance(X, (list, tuple)):
        flux = np.array(X, dtype=float, ndmin=2)
        if flux.ndim != 2:
            raise ValueError(f"spectra must be (n_spec, n_pix), got shape {flux.shape}")
        if flux.shape[1] != n_pix:
            raise ValueError(f"spectra have {flux.shape[1]} pixels but the model grid has {n_pix}; "
                             "resample onto the model wavelength grid first")
        iv = None
        if ivar is not None:
            iv = np.array(ivar, dtype=float, ndmin=2)
            if iv.shape != flux.shape:
                raise ValueError(f"ivar shape {iv.shape} != flux shape {flux.shape}")
        return flux, iv, np.zeros(flux.shape[0], bool)
    # ragged sequence: check each spectrum, flag the wrong ones
    seq = list(X)
    n = len(seq)
    flux = np.full((n, n_pix), np.nan)
    iv = None if ivar is None else np.zeros((n, n_pix))
    bad = np.zeros(n, bool)
    for i, f in enumerate(seq):
        try:
            f = np.asarray(f, float).ravel()
            w = None if ivar is None else np.asarray(ivar[i], float).ravel()
        except (TypeError, ValueError):
            bad[i] = True
            continue
        if f.size != n_pix or (w is not None and w.size != n_pix):
            bad[i] = True
            continue
        flux[i] = f
        if iv is not None:
            iv[i] = w
    return flux, iv, bad


def weights(flux: np.ndarray, ivar: np.ndarray | None, model_var: np.ndarray,
            pixel_usable: np.ndarray) -> np.ndarray:
    """Per-pixel likelihood weights ``1 / (sigma_obs^2 + CV-MSE_j)`` of Li 2021 eq. 3.

    Parameters
    ----------
    flux : (n, n_pix) array
        Normalised fluxes (NaN masks a pixel).
    ivar : (n, n_pix) array or None
        Inverse variances, flux^-2 (0 or NaN masks a pixel; ``inf`` means no
        observational noise).  None: the model variance alone.
    model_var : (n_pix,) array
        CV-MSE per pixel, flux^2 (``inf`` for pixels without training data).
    pixel_usable : (n_pix,) bool array

    Returns
    -------
    (n, n_pix) array, flux^-2; 0 where masked.
    """
    ok = np.isfinite(flux) & np.isfinite(model_var)[None, :] & pixel_usable[None, :]
    if ivar is None:
        var = np.broadcast_to(model_var, flux.shape)
    else:
        ok &= ~np.isnan(ivar) & (ivar > 0)              # ivar = inf: no observational noise
        with np.errstate(divide="ignore", invalid="ignore"):
            var = 1.0 / np.where(ok, ivar, 1.0) + model_var
    with np.errstate(divide="ignore"):
        w = np.where(ok & (var > 0), 1.0 / np.where(var > 0, var, 1.0), 0.0)
    return w


def label_metadata(label_names: Sequence[str] | None, label_units: Sequence[str] | None,
                   n_label: int) -> tuple[list[str], list[str]]:
    """Label names (default ``label0, label1, ...``) and units (default "") as lists of ``n_label``.

    Raises
    ------
    ValueError
        Names or units given with another length.
    """
    names = list(label_names) if label_names is not None else [f"label{k}" for k in range(n_label)]
    units = list(label_units) if label_units is not None else [""] * n_label
    if len(names) != n_label or len(units) != n_label:
        raise ValueError(f"label_names/label_units must have {n_label} entries")
    return names, units


def wavelength_grid(wavelength: Any, n_pix: int) -> np.ndarray:
    """The model's wavelength grid (n_pix,): ``wavelength`` (Angstrom) or the pixel index when None.

    Raises
    ------
    ValueError
        A grid of another length than ``n_pix``.
    """
    wave = np.arange(n_pix, dtype=float) if wavelength is None else np.asarray(wavelength, float).ravel()
    if wave.size != n_pix:
        raise ValueError(f"wavelength has {wave.size} entries, flux has {n_pix} pixels")
    return wave


def hyperparameter_grid(C: Any, epsilon: Any, gamma: Any) -> dict[str, np.ndarray]:
    """The SVR grid as 1-D float arrays keyed ``C``, ``epsilon``, ``gamma`` (standardised units).

    Raises
    ------
    ValueError
        An empty axis, ``C`` or ``gamma`` not positive, or ``epsilon`` negative.
    """
    Cs = np.asarray(C, float).ravel()
    es = np.asarray(epsilon, float).ravel()
    gs = np.asarray(gamma, float).ravel()
    if min(Cs.size, es.size, gs.size) == 0 or np.any(Cs <= 0) or np.any(es < 0) or np.any(gs <= 0):
        raise ValueError("C and gamma grids must be positive, epsilon non-negative, none empty")
    return {"C": Cs, "epsilon": es, "gamma": gs}
