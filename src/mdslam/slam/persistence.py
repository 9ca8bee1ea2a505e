"""A SLAM model to and from its file (:mod:`mdslam.modelfile`): parameters as JSON, state as arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import modelfile
from .training import _grid_edge_fraction, _n_folds


def jsonable_params(params: dict[str, Any]) -> dict[str, Any]:
    """``get_params()`` as JSON types; a CV splitter is stored as its number of folds.

    Raises
    ------
    ValueError
        A callable prior (a file holds no code).
    """
    out = {}
    for k, v in params.items():
        if k == "prior" and callable(v):
            raise ValueError("a model with a callable prior cannot be saved (the file holds no code): "
                             "set_params(prior=...) to 'flat', 'training' or label samples first")
        if k == "cv" and not isinstance(v, (int, np.integer)):
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


def save(model: Any, path: Any) -> None:
    """Write a fitted model's parameters and learned state (attributes ending in ``_``) to ``path``."""
    model._check_fitted()
    state = {k: v for k, v in model.__dict__.items() if k.endswith("_") and not k.startswith("_")}
    modelfile.save_model(path, state, jsonable_params(model.get_params()))


def load(cls: type, path: Any) -> Any:
    """A model of class ``cls`` read from ``path`` (written by :func:`save`), with its derived state rebuilt."""
    params, state = modelfile.load_model(path)
    params.pop("cv_repr", None)
    if isinstance(params.get("domain"), list):
        params["domain"] = np.asarray(params["domain"], float)
    if isinstance(params.get("prior"), list):
        params["prior"] = np.asarray(params["prior"], float)
    for key in ("C", "epsilon", "gamma"):
        params[key] = tuple(params[key])
    valid = cls().get_params()
    model = cls(**{k: v for k, v in params.items() if k in valid})
    model.__dict__.update(state)
    model.n_features_in_ = int(model.dual_coef_.shape[0])
    model.cv_mse_ = model.cv_mse_scaled_ * model.flux_scale_**2
    model.cv_md_ = model.cv_md_scaled_ * model.flux_scale_
    model.grid_edge_fraction_ = _grid_edge_fraction(model)
    model._reset_cache()
    return model
