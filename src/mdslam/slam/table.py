"""The label table of :meth:`mdslam.slam.SLAM.predict_table`: labels, uncertainties, diagnostics, flags."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import astropy.units as u
import numpy as np
from astropy.table import Table

from ..flags import LABEL_FLAG_MEANING
from . import errorlaw, quality

_FORMAL = "formal: sqrt(diag((J^T W J)^-1)), not scaled by rchi2"


_ML = "maximum likelihood (Li 2021 eq. 3)"
_ML_CORRELATED = "maximum likelihood, correlated-pixel chi2 (Li 2021 eq. 3 with the pixel covariance)"


@functools.lru_cache(maxsize=64)
def _unit(text: str) -> u.UnitBase | None:
    """``text`` as an astropy unit, parsed once (None for ""): parsing it for every column of every
    call was ~15 % of building the table of 20 spectra."""
    return u.Unit(text, parse_strict="silent") if text else None      # as Column.unit parses it


def _add(t: Table, name: str, values: np.ndarray, unit: str, description: str | None = None) -> None:
    """Column ``name`` of ``t`` with a unit (none for "") and an optional description."""
    t[name] = values
    t[name].unit = _unit(unit)
    if description is not None:
        t[name].description = description


def label_table(res: dict[str, Any], label_names: Sequence[str], label_units: Sequence[str],
                error_law: dict | None, ids: Any = None, *, prior: Any = None,
                chi2_scale: float | None = None, likelihood: str = "independent") -> Table:
    """One row per spectrum from the output of :func:`mdslam.slam.infer.infer`.

    Parameters
    ----------
    res : dict
        :func:`mdslam.slam.infer.infer`'s output.
    label_names, label_units : sequences of str
    error_law : dict or None
        The law of :func:`mdslam.slam.errorlaw.fit_error_law` (``a``, ``floor``
        per label), for ``e_<label>_cv`` and ``e_cv_extrapolated``.
    ids : (n,) sequence, optional
        The ``id`` column (default ``0..n-1``).
    prior : str, array or callable, optional
        The model's prior, named in ``meta['HEADLINE']`` when ``res`` has a posterior.
    chi2_scale : float, optional
        The likelihood scale in use, ``meta['CHI2SCL']`` when ``res`` has a posterior.
    likelihood : str
        The model's likelihood, ``meta['LIKELIHD']``; ``"correlated"`` is named in
        ``meta['HEADLINE']`` too.

    Returns
    -------
    Table with the columns described in :meth:`mdslam.slam.SLAM.predict_table`.
    """
    n_spec = res["labels"].shape[0]
    t = Table()
    t["id"] = np.arange(n_spec) if ids is None else np.asarray(ids)
    t["snr"] = res["snr"]
    post = res["posterior"]
    ml = _ML_CORRELATED if likelihood == "correlated" else _ML
    for li, (name, unit) in enumerate(zip(label_names, label_units, strict=True)):
        if post is None:
            _add(t, name, res["labels"][:, li], unit)
            _add(t, f"e_{name}", res["e_formal"][:, li], unit, _FORMAL)
        else:
            _add(t, name, res["labels"][:, li], unit, "posterior mean (Li 2021 eq. 2)")
            _add(t, f"e_{name}", post["std"][:, li], unit, "posterior standard deviation, CV-calibrated")
            _add(t, f"{name}_map", post["map"][:, li], unit, "posterior maximum (Li 2021 eq. 2)")
            _add(t, f"{name}_ml", res["ml"][:, li], unit, ml)
            _add(t, f"e_{name}_ml", res["e_formal"][:, li], unit, _FORMAL)
        _add(t, f"e_{name}_cv", errorlaw.error_law_sigma(error_law, res["snr"], li), unit,
             "empirical: sqrt(floor^2 + (a/SNR)^2) fitted to the binned CV scatter")
    t["e_cv_extrapolated"] = errorlaw.error_law_outside(error_law, res["snr"])
    t["e_cv_extrapolated"].description = "SNR outside the range the e_<label>_cv law was fitted on"
    t["chi2"] = res["chi2"]
    t["rchi2"] = quality.rchi2(res["chi2"], res["n_good"], len(label_names))
    t["n_good_pixels"] = res["n_good"]
    t["n_iter"] = res["n_iter"]
    t["converged"] = res["converged"]
    t["flag"] = res["flag"].astype(np.int32)
    t["flag"].description = "; ".join(f"{int(b)}: {s}" for b, s in LABEL_FLAG_MEANING.items())
    t.meta["LABELS"] = ",".join(label_names)
    t.meta["LIKELIHD"] = likelihood
    if post is None:
        t.meta["HEADLINE"] = ml
    else:
        t["posterior_n_eff"] = res["n_eff"]
        kind = prior if isinstance(prior, str) else type(prior).__name__
        lik = ", correlated-pixel likelihood" if likelihood == "correlated" else ""
        t.meta["HEADLINE"] = f"posterior mean (Li 2021 eq. 2), prior {kind}{lik}"
        t.meta["CHI2SCL"] = chi2_scale
    return t
