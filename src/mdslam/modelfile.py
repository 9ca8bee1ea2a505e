"""The SLAM model file: one ``.npz`` of plain arrays plus a JSON metadata string. No pickle.

Format ``mdslam.slam-model``, version 3
---------------------------------------
A zip archive written by :func:`numpy.savez_compressed` and read back with
``np.load(path, allow_pickle=False)``.  Members (``n_pix`` pixels, ``n_train``
training stars, ``n_label`` labels):

==========================  ======================  ========================================================
member                      shape                   meaning
==========================  ======================  ========================================================
``metadata``                () unicode              JSON, see below
``wavelength``              (n_pix,)                wavelength grid of the model
``label_mean``              (n_label,)              label standardisation: mean
``label_scale``             (n_label,)              label standardisation: standard deviation
``flux_mean``               (n_pix,)                per-pixel flux standardisation: mean
``flux_scale``              (n_pix,)                per-pixel flux standardisation: std
``X_train``                 (n_train, n_label)      standardised training labels = support vectors
``dual_coef``               (n_pix, n_train)        SVR dual coefficients (``alpha - alpha*``), 0 = not a SV
``intercept``               (n_pix,)                SVR intercepts (standardised flux)
``C``                       (n_pix,)                chosen penalty per pixel
``epsilon``                 (n_pix,)                chosen tube half-width per pixel (standardised flux)
``gamma``                   (n_pix,)                chosen RBF width per pixel (standardised labels)
``cv_mse_scaled``           (n_pix,)                CV-MSE (standardised flux); ``inf`` = unusable pixel
``cv_md_scaled``            (n_pix,)                CV mean deviation (Qiu eq. 2, standardised flux)
``cv_mse_grid``             (n_pix, nC, neps, ng)   CV-MSE over the whole grid (standardised)
``pixel_usable``            (n_pix,) bool           pixel had training data
``grid_C`` etc.             (nC,), (neps,), (ng,)   the hyperparameter grid
``training_domain``         (n_label, 2)            min/max of the training labels (physical units)
``error_law_a/floor``       (n_label,)              ``sigma^2 = floor^2 + (a/SNR)^2`` (if an error law is set)
``error_law_b``             (n_label,)              ``sigma = a * SNR**b`` instead (files of earlier versions)
``error_law_cov``           (n_label, 2, 2)         covariance of (a, floor), or of (a, b)
``chi2_scale``              ()                      likelihood scale ``s`` of ``exp(-chi2/2s)`` (v2)
``posterior_std_scale``     (n_label, 2)            ``f_ref, d`` of the posterior std factor (v2)
``posterior_std_snr_ref``   ()                      its reference SNR (v2)
``chi2_scale_grid``         (n_s,)                  candidate ``s`` of the CV choice (v2, if made)
``chi2_scale_score``        (n_s,)                  their CV score (v2, if made)
``noise_factor``            (n_pix, k)              correlated likelihood: loadings ``V`` of ``V V^T + diag(d)`` (v3)
``noise_diag``              (n_pix,)                its diagonal ``d``, flux^2 (v3)
``noise_rank_grid/score``   (n_k,)                  candidate ranks and their held-out log-likelihood (v3)
``noise_rank``              ()                      the chosen rank (v3)
``rchi2_threshold``         ()                      bad-fit flag threshold on rchi2 (optional)
``knn_threshold``           ()                      k-NN far-from-training threshold (optional)
``knn_k``                   ()                      neighbour rank of that distance (optional)
``quick_flux``              (n_train, n_pix)        float32 model flux at the training labels: LM's starting
                                                    grid (optional; computed at the first labelling if absent)
==========================  ======================  ========================================================

Version 2 added the likelihood scale and the posterior calibration; the prior
is a hyperparameter (``params['prior']``: null, ``"flat"``, ``"training"`` or
label samples).  A version-1 file loads with ``prior=None`` (maximum
likelihood, as it was written) and ``s = 1``.  Version 3 added the
correlated-pixel likelihood (``params['likelihood']``: ``"independent"`` or
``"correlated"``, :mod:`mdslam.slam.noise`); files without it load as
``"independent"`` (Li 2021 eq. 3), and the ``noise_*`` members are written
only for ``"correlated"`` models.

The three optional members (:func:`mdslam.checks.rchi2_threshold`,
:func:`mdslam.checks.knn_threshold`) may be absent from older files; the
flags they drive are then never set.

``metadata`` holds ``format`` (``"mdslam.slam-model"``), ``format_version``
(int), ``mdslam_version``, ``label_names``, ``label_units``, ``params`` (the
estimator's ``get_params()``; a CV splitter is stored as its number of folds),
``n_train``, ``solver_info`` and, with an error law, its ``snr_range`` and
``n_bins``.  Flux and physical units follow from the training data.

A reader refuses files whose ``format_version`` is newer than it knows, and
reports a truncated or corrupted archive (bad zip, CRC error, damaged deflate
stream, missing member or metadata key, inconsistent shapes) as
:class:`ModelFileError` naming the file.

This module knows the format only: it writes and reads a dict of the
estimator's learned attributes; :meth:`mdslam.slam.SLAM.save` and
:meth:`mdslam.slam.SLAM.load` call it.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "ModelFileError", "save_model", "load_model"]

FORMAT_NAME = "mdslam.slam-model"
FORMAT_VERSION = 3

_ARRAYS = {
    # member: (attribute, dtype)
    "wavelength": ("wavelength_", float),
    "label_mean": ("label_mean_", float),
    "label_scale": ("label_scale_", float),
    "flux_mean": ("flux_mean_", float),
    "flux_scale": ("flux_scale_", float),
    "X_train": ("X_train_", float),
    "dual_coef": ("dual_coef_", float),
    "intercept": ("intercept_", float),
    "C": ("C_", float),
    "epsilon": ("epsilon_", float),
    "gamma": ("gamma_", float),
    "cv_mse_scaled": ("cv_mse_scaled_", float),
    "cv_md_scaled": ("cv_md_scaled_", float),
    "cv_mse_grid": ("cv_mse_grid_", float),
    "pixel_usable": ("pixel_usable_", bool),
    "training_domain": ("training_domain_", float),
}


#: Members added after the first files were written; a file without them loads with
#: the default (the flags they drive are then not set).
_OPTIONAL_ARRAYS = {
    # member: (attribute, dtype, default)
    "rchi2_threshold": ("rchi2_threshold_", float, np.inf),
    "knn_threshold": ("knn_threshold_", float, np.inf),
    "knn_k": ("knn_k_", int, 5),
}

#: Metadata keys every reader needs.
_REQUIRED_META = ("label_names", "label_units", "params", "n_train")


class ModelFileError(ValueError):
    """A model file that cannot be read: corrupted, truncated, foreign or too new."""


def save_model(path, state: dict, params: dict) -> Path:
    """Write a fitted model's state to ``path`` (format above).

    Parameters
    ----------
    path : str or Path
        Output file; ``.npz`` is appended if missing.  Written to a temporary
        name first and renamed, so a crash never leaves half a file under the
        final name.
    state : dict
        The learned attributes of :class:`mdslam.slam.SLAM`, keyed by attribute
        name (``dual_coef_``, ``label_names_``, ``error_law_``, ...; those of
        the table above plus ``param_grid_``, ``label_names_``,
        ``label_units_``, ``n_train_``, ``solver_info_``, ``error_law_``).
    params : dict
        The estimator's hyperparameters, already JSON-serialisable.

    Returns
    -------
    Path of the written file.
    """
    from . import __version__
    arrays = {name: np.asarray(state[attr], dtype=dt) for name, (attr, dt) in _ARRAYS.items()}
    for key in ("C", "epsilon", "gamma"):
        arrays[f"grid_{key}"] = np.asarray(state["param_grid_"][key], float)
    for name, (attr, dt, _) in _OPTIONAL_ARRAYS.items():
        if state.get(attr) is not None:
            arrays[name] = np.asarray(state[attr], dtype=dt)
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "mdslam_version": __version__,
        "label_names": list(state["label_names_"]),
        "label_units": list(state["label_units_"]),
        "params": params,
        "n_train": int(state["n_train_"]),
        "solver_info": {k: (float(v) if isinstance(v, (float, np.floating)) else int(v))
                        for k, v in (state.get("solver_info_") or {}).items()},
    }
    law = state.get("error_law_")
    if law is not None:
        arrays["error_law_a"] = np.asarray(law["a"], float)
        second = "floor" if law.get("kind") == "floor" else "b"
        arrays[f"error_law_{second}"] = np.asarray(law[second], float)
        arrays["error_law_cov"] = np.asarray(law["cov"], float)
        meta["error_law"] = {"snr_range": list(law["snr_range"]), "n_bins": int(law["n_bins"])}
    arrays["chi2_scale"] = np.asarray(state.get("chi2_scale_", 1.0), float)
    L = len(state["label_names_"])
    arrays["posterior_std_scale"] = np.asarray(state.get("posterior_std_scale_", [[1.0, 0.0]] * L), float)
    arrays["posterior_std_snr_ref"] = np.asarray(state.get("posterior_std_snr_ref_", 1.0), float)
    cvs = state.get("chi2_scale_cv_")
    if cvs is not None:
        arrays["chi2_scale_grid"] = np.asarray(cvs["grid"], float)
        arrays["chi2_scale_score"] = np.asarray(cvs["score"], float)
    if state.get("noise_factor_") is not None:
        arrays["noise_factor"] = np.asarray(state["noise_factor_"], float)
        arrays["noise_diag"] = np.asarray(state["noise_diag_"], float)
        rk = state.get("noise_rank_cv_") or {}
        arrays["noise_rank_grid"] = np.asarray(rk.get("ranks", []), int)
        arrays["noise_rank_score"] = np.asarray(rk.get("score", []), float)
        arrays["noise_rank"] = np.asarray(rk.get("rank", -1), int)
    if state.get("quick_flux_") is not None:
        arrays["quick_flux"] = np.asarray(state["quick_flux_"], np.float32)
    arrays["metadata"] = np.array(json.dumps(meta))
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, path)
    return path


def load_model(path) -> tuple[dict, dict]:
    """Read a model file written by :func:`save_model`.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    params : dict
        Hyperparameters as stored (JSON types; lists for sequences).
    state : dict
        Learned attributes keyed by attribute name, as given to :func:`save_model`.

    Raises
    ------
    FileNotFoundError
        No such file.
    ModelFileError
        Not an mdslam model, a newer format version, or a corrupted/truncated file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no model file {path}")
    meta, arrays = _read(path)
    state = _state(meta, arrays)
    _check_consistent(state, path)
    return dict(meta["params"]), state


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Metadata and arrays of a model file, checked (format, version, required members).

    Raises
    ------
    ModelFileError
        Not an mdslam model, a newer format version, or a corrupted/truncated file.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if "metadata" not in names:
                raise ModelFileError(f"{path}: not an mdslam SLAM model (no 'metadata' member)")
            meta = json.loads(str(z["metadata"][()]))
            _check_meta(meta, path)
            missing = [m for m in list(_ARRAYS) + ["grid_C", "grid_epsilon", "grid_gamma"] if m not in names]
            if missing:
                raise ModelFileError(f"{path}: truncated or corrupted model file, missing {missing}")
            return meta, {m: z[m] for m in names if m != "metadata"}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError, TypeError,
            json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: corrupted or truncated model file ({type(exc).__name__}: {exc})") from exc


def _check_meta(meta: object, path: Path) -> None:
    """Raise :class:`ModelFileError` unless ``meta`` is this format's metadata, of a version this code reads."""
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path}: model metadata is not a JSON object")
    if meta.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: format {meta.get('format')!r} is not {FORMAT_NAME!r}")
    version = int(meta.get("format_version", -1))
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} is newer than this mdslam understands "
            f"(<= {FORMAT_VERSION}); upgrade mdslam (file written by mdslam "
            f"{meta.get('mdslam_version', '?')})")
    if version < 1:
        raise ModelFileError(f"{path}: invalid format_version {version}")
    absent = [k for k in _REQUIRED_META if k not in meta]
    if absent:
        raise ModelFileError(f"{path}: model metadata lacks {absent}; the file is damaged or "
                             "was not written by mdslam")


def _state(meta: dict, arrays: dict[str, np.ndarray]) -> dict:
    """The learned attributes of a model from its file's metadata and arrays (defaults for optional members)."""
    state = {attr: np.asarray(arrays[name], dtype=dt) for name, (attr, dt) in _ARRAYS.items()}
    state["param_grid_"] = {k: arrays[f"grid_{k}"] for k in ("C", "epsilon", "gamma")}
    for name, (attr, dt, default) in _OPTIONAL_ARRAYS.items():
        state[attr] = dt(arrays[name]) if name in arrays else default
    state["label_names_"] = list(meta["label_names"])
    state["label_units_"] = list(meta["label_units"])
    state["n_train_"] = int(meta["n_train"])
    state["solver_info_"] = meta.get("solver_info", {})
    if "error_law_a" in arrays:
        second = "floor" if "error_law_floor" in arrays else "b"
        state["error_law_"] = {"a": arrays["error_law_a"], second: arrays[f"error_law_{second}"],
                               "cov": arrays["error_law_cov"], "kind": "floor" if second == "floor" else "power",
                               "snr_range": tuple(meta["error_law"]["snr_range"]),
                               "n_bins": int(meta["error_law"]["n_bins"])}
    else:
        state["error_law_"] = None
    L = len(state["label_names_"])
    state["chi2_scale_"] = float(arrays["chi2_scale"]) if "chi2_scale" in arrays else 1.0
    state["posterior_std_scale_"] = (np.asarray(arrays["posterior_std_scale"], float).reshape(L, 2)
                                     if "posterior_std_scale" in arrays else np.array([[1.0, 0.0]] * L))
    state["posterior_std_snr_ref_"] = (float(arrays["posterior_std_snr_ref"])
                                       if "posterior_std_snr_ref" in arrays else 1.0)
    state["chi2_scale_cv_"] = ({"grid": arrays["chi2_scale_grid"], "score": arrays["chi2_scale_score"]}
                               if "chi2_scale_grid" in arrays else None)
    state.update(_noise_state(arrays))
    state["quick_flux_"] = np.asarray(arrays["quick_flux"], np.float32) if "quick_flux" in arrays else None
    return state


def _noise_state(arrays: dict[str, np.ndarray]) -> dict:
    """The correlated likelihood's noise model from a file's arrays (None for files without one)."""
    if "noise_factor" not in arrays:
        return {"noise_factor_": None, "noise_diag_": None, "noise_rank_cv_": None}
    V = np.asarray(arrays["noise_factor"], float)
    return {"noise_factor_": V, "noise_diag_": np.asarray(arrays["noise_diag"], float),
            "noise_rank_cv_": {"ranks": np.asarray(arrays["noise_rank_grid"], int),
                               "score": np.asarray(arrays["noise_rank_score"], float),
                               "rank": int(arrays["noise_rank"]) if "noise_rank" in arrays else -1}}


def _check_consistent(s: dict, path) -> None:
    n_pix, n_train = s["dual_coef_"].shape
    L = s["label_mean_"].size
    checks = {
        "wavelength": s["wavelength_"].shape == (n_pix,),
        "flux_mean/flux_scale": s["flux_mean_"].shape == s["flux_scale_"].shape == (n_pix,),
        "X_train": s["X_train_"].shape == (n_train, L),
        "intercept/C/epsilon/gamma": all(s[a].shape == (n_pix,) for a in
                                         ("intercept_", "C_", "epsilon_", "gamma_")),
        "label names": len(s["label_names_"]) == L == s["label_scale_"].size,
        "training_domain": s["training_domain_"].shape == (L, 2),
        "noise_factor/noise_diag": s.get("noise_factor_") is None or (
            s["noise_factor_"].ndim == 2 and s["noise_factor_"].shape[0] == n_pix
            and s["noise_diag_"].shape == (n_pix,)),
        "quick_flux": s.get("quick_flux_") is None or s["quick_flux_"].shape == (n_train, n_pix),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise ModelFileError(f"{path}: inconsistent model file ({', '.join(bad)} have the wrong shape)")
