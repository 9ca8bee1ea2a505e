"""The SLAM model file: one ``.npz`` of plain arrays plus a JSON metadata string. No pickle.

Format ``mdslam.slam-model``, version 1
---------------------------------------
A zip archive written by :func:`numpy.savez_compressed` and read back with
``np.load(path, allow_pickle=False)``.  Members (``n_pix`` pixels, ``n_train``
training stars, ``n_label`` labels):

===================  =====================  ===========================================
member               shape                  meaning
===================  =====================  ===========================================
``metadata``         () unicode             JSON, see below
``wavelength``       (n_pix,)               wavelength grid of the model
``label_mean``       (n_label,)             label standardisation: mean
``label_scale``      (n_label,)             label standardisation: standard deviation
``flux_mean``        (n_pix,)               per-pixel flux standardisation: mean
``flux_scale``       (n_pix,)               per-pixel flux standardisation: std
``X_train``          (n_train, n_label)     standardised training labels = support vectors
``dual_coef``        (n_pix, n_train)       SVR dual coefficients (``alpha - alpha*``), 0 = not a SV
``intercept``        (n_pix,)               SVR intercepts (standardised flux)
``C``                (n_pix,)               chosen penalty per pixel
``epsilon``          (n_pix,)               chosen tube half-width per pixel (standardised flux)
``gamma``            (n_pix,)               chosen RBF width per pixel (standardised labels)
``cv_mse_scaled``    (n_pix,)               CV-MSE (standardised flux); ``inf`` = unusable pixel
``cv_md_scaled``     (n_pix,)               CV mean deviation (Qiu eq. 2, standardised flux)
``cv_mse_grid``      (n_pix, nC, neps, ng)  CV-MSE over the whole grid (standardised)
``pixel_usable``     (n_pix,) bool          pixel had training data
``grid_C`` etc.      (nC,), (neps,), (ng,)  the hyperparameter grid
``training_domain``  (n_label, 2)           min/max of the training labels (physical units)
``error_law_a/b``    (n_label,)             ``sigma = a * SNR**b`` (only if an error law is set)
``error_law_cov``    (n_label, 2, 2)        covariance of (a, b)
===================  =====================  ===========================================

``metadata`` holds  ``format`` (``"mdslam.slam-model"``), ``format_version``
(int), ``mdslam_version``, ``label_names``, ``label_units``, ``params`` (the
estimator's ``get_params()``; a CV splitter is stored as its number of folds),
``n_train``, ``solver_info`` and, with an error law, its ``snr_range`` and
``n_bins``.  Flux and physical units follow from the training data.

A reader refuses files whose ``format_version`` is newer than it knows, and
reports a truncated or corrupted archive (bad zip, CRC error, missing member,
inconsistent shapes) as :class:`ModelFileError` naming the file.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "ModelFileError", "save_model", "load_model"]

FORMAT_NAME = "mdslam.slam-model"
FORMAT_VERSION = 1

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


class ModelFileError(ValueError):
    """A model file that cannot be read: corrupted, truncated, foreign or too new."""


def _jsonable_params(params: dict) -> dict:
    out = {}
    for k, v in params.items():
        if k == "cv" and not isinstance(v, (int, np.integer)):
            from .slam import _n_folds
            nf = _n_folds(v)
            out[k] = nf if nf is not None else 10
            out["cv_repr"] = repr(v)
        elif isinstance(v, np.ndarray):
            out[k] = v.tolist()
        elif isinstance(v, (tuple, list)):
            out[k] = [float(x) if isinstance(x, (np.floating, float)) else x for x in v]
        elif isinstance(v, dict):
            out[k] = {kk: list(map(float, vv)) for kk, vv in v.items()}
        elif isinstance(v, (np.integer,)):
            out[k] = int(v)
        elif isinstance(v, (np.floating,)):
            out[k] = float(v)
        else:
            out[k] = v
    return out


def save_model(model, path) -> None:
    """Write a fitted :class:`mdslam.slam.SLAM` to ``path`` (format above).

    Parameters
    ----------
    model : SLAM
        A fitted model.
    path : str or Path
        Output file; ``.npz`` is appended by numpy if missing.  Written to a
        temporary name first and renamed, so a crash never leaves half a file
        under the final name.
    """
    from . import __version__
    model._check_fitted()
    arrays = {name: np.asarray(getattr(model, attr), dtype=dt) for name, (attr, dt) in _ARRAYS.items()}
    for key in ("C", "epsilon", "gamma"):
        arrays[f"grid_{key}"] = np.asarray(model.param_grid_[key], float)
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "mdslam_version": __version__,
        "label_names": list(model.label_names_),
        "label_units": list(model.label_units_),
        "params": _jsonable_params(model.get_params()),
        "n_train": int(model.n_train_),
        "solver_info": {k: (float(v) if isinstance(v, (float, np.floating)) else int(v))
                        for k, v in (model.solver_info_ or {}).items()},
    }
    law = model.error_law_
    if law is not None:
        arrays["error_law_a"] = np.asarray(law["a"], float)
        arrays["error_law_b"] = np.asarray(law["b"], float)
        arrays["error_law_cov"] = np.asarray(law["cov"], float)
        meta["error_law"] = {"snr_range": list(law["snr_range"]), "n_bins": int(law["n_bins"])}
    arrays["metadata"] = np.array(json.dumps(meta))
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    os.replace(tmp, path)


def load_model(path):
    """Read a model written by :func:`save_model`.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    SLAM, fitted, giving the same predictions as the saved model.

    Raises
    ------
    FileNotFoundError
        No such file.
    ModelFileError
        Not an mdslam model, a newer format version, or a corrupted/truncated file.
    """
    from .slam import SLAM
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no model file {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if "metadata" not in names:
                raise ModelFileError(f"{path}: not an mdslam SLAM model (no 'metadata' member)")
            meta = json.loads(str(z["metadata"][()]))
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
            missing = [m for m in list(_ARRAYS) + ["grid_C", "grid_epsilon", "grid_gamma"] if m not in names]
            if missing:
                raise ModelFileError(f"{path}: truncated or corrupted model file, missing {missing}")
            arrays = {m: z[m] for m in names if m != "metadata"}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: corrupted or truncated model file ({type(exc).__name__}: {exc})") from exc

    params = dict(meta["params"])
    params.pop("cv_repr", None)
    if isinstance(params.get("domain"), list):
        params["domain"] = np.asarray(params["domain"], float)
    for key in ("C", "epsilon", "gamma"):
        params[key] = tuple(params[key])
    valid = SLAM().get_params()
    model = SLAM(**{k: v for k, v in params.items() if k in valid})
    for name, (attr, dt) in _ARRAYS.items():
        setattr(model, attr, np.asarray(arrays[name], dtype=dt))
    model.param_grid_ = {k: arrays[f"grid_{k}"] for k in ("C", "epsilon", "gamma")}
    model.label_names_ = list(meta["label_names"])
    model.label_units_ = list(meta["label_units"])
    model.n_train_ = int(meta["n_train"])
    model.n_features_in_ = int(model.dual_coef_.shape[0])
    model.solver_info_ = meta.get("solver_info", {})
    model.cv_mse_ = model.cv_mse_scaled_ * model.flux_scale_**2
    model.cv_md_ = model.cv_md_scaled_ * model.flux_scale_
    if "error_law_a" in arrays:
        model.error_law_ = {"a": arrays["error_law_a"], "b": arrays["error_law_b"],
                            "cov": arrays["error_law_cov"],
                            "snr_range": tuple(meta["error_law"]["snr_range"]),
                            "n_bins": int(meta["error_law"]["n_bins"])}
    else:
        model.error_law_ = None
    _check_consistent(model, path)
    from .slam import _grid_edge_fraction
    model.grid_edge_fraction_ = _grid_edge_fraction(model)
    model._reset_cache()
    return model


def _check_consistent(model, path) -> None:
    n_pix, n_train = model.dual_coef_.shape
    L = model.label_mean_.size
    checks = {
        "wavelength": model.wavelength_.shape == (n_pix,),
        "flux_mean/flux_scale": model.flux_mean_.shape == model.flux_scale_.shape == (n_pix,),
        "X_train": model.X_train_.shape == (n_train, L),
        "intercept/C/epsilon/gamma": all(a.shape == (n_pix,) for a in
                                         (model.intercept_, model.C_, model.epsilon_, model.gamma_)),
        "label names": len(model.label_names_) == L == model.label_scale_.size,
        "training_domain": model.training_domain_.shape == (L, 2),
    }
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        raise ModelFileError(f"{path}: inconsistent model file ({', '.join(bad)} have the wrong shape)")
