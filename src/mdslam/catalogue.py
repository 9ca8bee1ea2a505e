"""The label catalogue: build it from SLAM predictions, write it as FITS, describe its columns.

One FITS binary table per catalogue (Li 2021 Tables 2 and 4, Qiu 2025 Table 4): identifiers,
the SLAM labels with their formal and empirical uncertainties, fit diagnostics and flags.
Every column carries its unit (``TUNITn``, also for ``dex``, which astropy would drop) and a
one-line description (``TCOMMn``), so the file documents itself; :func:`describe_columns`
turns the same metadata into the table the book prints.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .flags import LabelFlag
from .validation import MIN_N_SCATTER

__all__ = ["LABEL_COLUMNS", "QIU2025_TABLE4", "build_catalogue", "write_catalogue", "read_catalogue",
           "describe_columns", "mean_std_text", "qiu2025_table4", "ROUTE_RULE", "teff_logg_route",
           "add_teff_logg_model"]

#: SLAM label name -> (catalogue column, unit, what it is).
LABEL_COLUMNS: dict[str, tuple[str, str, str]] = {
    "teff": ("TEFF", "K", "effective temperature"),
    "logg": ("LOGG", "dex", "surface gravity log10(g / cm s^-2)"),
    "fe_h": ("FE_H", "dex", "iron abundance [Fe/H]"),
    "m_h": ("M_H", "dex", "metallicity [M/H]"),
    "alpha_m": ("ALPHA_M", "dex", "alpha-element abundance [alpha/M]"),
}

#: Qiu et al. 2025 Table 4 (catalogue of SLAM outputs): column -> (unit, description as printed).
QIU2025_TABLE4: dict[str, tuple[str, str]] = {
    "Teff": ("K", "Effective temperature from SLAM"),
    "e_Teff": ("K", "Uncertainty in Teff from SLAM"),
    "logg": ("dex", "Surface gravity from SLAM"),
    "e_logg": ("dex", "Uncertainty in log g from SLAM"),
    "alphaM": ("dex", "[alpha/M] from SLAM"),
    "e_alphaM": ("dex", "Uncertainty in [alpha/M] from SLAM"),
    "FeH": ("dex", "[Fe/H] from SLAM, calibrated using LAMOST FGK companions"),
    "e_FeH": ("dex", "Uncertainty in [Fe/H] from SLAM"),
    "FeH_niu": ("dex", "[Fe/H] calibrated following Niu et al. (2023)"),
    "e_FeH_niu": ("dex", "Uncertainty in [Fe/H] niu from SLAM"),
}


def build_catalogue(pred: Table, identifiers: Mapping[str, tuple[Sequence, str]], *,
                    training_labels: str, cv: Table | None = None,
                    in_train: Sequence[bool] | None = None, track: str = "") -> Table:
    """Catalogue columns from a :meth:`mdslam.slam.SLAM.predict_table` output.

    Parameters
    ----------
    pred : Table
        One row per spectrum: ``snr``, the labels, ``e_<label>`` (formal, or the
        posterior std), ``e_<label>_cv`` (empirical law of SNR), ``chi2``, ``rchi2``,
        ``n_good_pixels``, ``converged``, ``flag``; labels named in ``pred.meta["LABELS"]``
        (comma separated) or found among :data:`LABEL_COLUMNS`. With a prior the
        labels are posterior means (``pred.meta["HEADLINE"]``, copied to the
        catalogue's meta and label descriptions) and the maximum-likelihood
        ``<label>_ml``, which the flags test, become ``<LABEL>_ML``.
    identifiers : mapping
        ``{column name: (values, description)}``, written first (e.g. Gaia source_id).
    training_labels : str
        What the model was trained on, for the label descriptions (e.g. "APOGEE DR17").
    cv : Table, optional
        Cross-validated labels of the training stars (``id`` and label columns), matched
        to ``pred["id"]``; with ``in_train`` they fill ``<LABEL>_CV`` (NaN for stars
        outside the training set).
    in_train : (n,) bool, optional
        Which rows were training stars (``IN_TRAIN`` column).
    track : str
        Written to ``meta["TRACK"]``.

    Returns
    -------
    Table
        With ``unit`` and ``description`` set on every column.
    """
    names = [n for n in str(pred.meta.get("LABELS", "")).split(",") if n] or \
        [n for n in LABEL_COLUMNS if n in pred.colnames]
    out = Table()
    for col, (values, desc) in identifiers.items():
        out[col] = np.asarray(values)
        out[col].description = desc
    out["SNR"] = np.asarray(pred["snr"], float)
    out["SNR"].description = "spectral SNR, median flux * sqrt(ivar) over good pixels"
    headline = str(pred.meta.get("HEADLINE", _ML))
    for n in names:
        _label_columns(out, pred, n, headline, training_labels)
    if in_train is not None:
        in_train = np.asarray(in_train, bool)
        out["IN_TRAIN"] = in_train
        out["IN_TRAIN"].description = "star is in the training set (its CV labels are in <LABEL>_CV)"
        if cv is not None:
            row = {v: i for i, v in enumerate(np.asarray(cv["id"]).tolist())}
            ids = np.asarray(pred["id"]).tolist()
            idx = np.array([row.get(v, -1) for v in ids])
            for n in names:
                col, unit, what = LABEL_COLUMNS.get(n, (n.upper(), str(pred[n].unit or ""), n))
                vals = np.where(idx >= 0, np.asarray(cv[n], float)[np.maximum(idx, 0)], np.nan)
                out[f"{col}_CV"] = np.where(in_train, vals, np.nan)
                out[f"{col}_CV"].unit = unit or None
                out[f"{col}_CV"].description = (f"k-fold cross-validated SLAM {what} (training stars only: "
                                                "predicted by a model fitted without the star)")
    for c, desc in (("chi2", "chi^2 of the best fit"),
                    ("rchi2", "chi^2 / (N_GOOD_PIXELS - number of labels)"),
                    ("n_good_pixels", "pixels used in the fit"),
                    ("converged", "Levenberg-Marquardt converged"),
                    ("flag", "bit flags: " + str(pred["flag"].description or ""))):
        if c in pred.colnames:
            out[c.upper()] = np.asarray(pred[c])
            out[c.upper()].description = desc
    out.meta["TRACK"] = track
    out.meta["LABELS"] = ",".join(names)
    out.meta["HEADLINE"] = headline
    return out


_ML = "maximum likelihood (Li 2021 eq. 3)"


def _label_columns(out: Table, pred: Table, n: str, headline: str, training_labels: str) -> None:
    """``<COL>``, ``<COL>_ERR``, ``<COL>_ERR_CV`` and (with a posterior) ``<COL>_ML`` of label ``n``, in place.

    ``<COL>`` is ``pred``'s headline label (``headline``: the posterior mean of Li 2021
    eq. 2 with a prior, else the maximum likelihood of eq. 3); ``<COL>_ERR`` its
    uncertainty as ``pred`` describes it (posterior std, or the formal one).
    """
    col, unit, what = LABEL_COLUMNS.get(n, (n.upper(), str(pred[n].unit or ""), n))
    _copy_col(out, col, np.asarray(pred[n], float), f"SLAM {what} ({headline}; trained on {training_labels})", unit)
    err = pred[f"e_{n}"].description or "formal uncertainty sqrt(diag((J^T W J)^-1))"
    _copy_col(out, f"{col}_ERR", np.asarray(pred[f"e_{n}"], float), err, unit)
    if f"e_{n}_cv" in pred.colnames:
        _copy_col(out, f"{col}_ERR_CV", np.asarray(pred[f"e_{n}_cv"], float), pred[f"e_{n}_cv"].description or
                  "empirical uncertainty fitted to the CV scatter against SNR (Qiu eqs. 6-8)", unit)
    if f"{n}_ml" in pred.colnames:
        _copy_col(out, f"{col}_ML", np.asarray(pred[f"{n}_ml"], float),
                  f"SLAM {what}, {pred[f'{n}_ml'].description or _ML}: the label the FLAG bits "
                  "(OUTSIDE_DOMAIN included) test", unit)


#: The rule that picks the model of a star's headline Teff and log g (column descriptions, chapter 8).
ROUTE_RULE = ("Teff and log g come from the three-label model when the two-label (Teff, log g) model puts the "
              "star inside the three-label model's label domain (both labels, by its maximum-likelihood labels), "
              "else from the two-label model; "
              "[Fe/H] always comes from the three-label model and carries its OUTSIDE_DOMAIN bit when the star "
              "is outside that domain")


def teff_logg_route(teff2: np.ndarray, logg2: np.ndarray, domain3: np.ndarray) -> np.ndarray:
    """Which stars take their Teff and log g from the three-label model (:data:`ROUTE_RULE`).

    The test uses the two-label model's labels, not the three-label model's own:
    a model pulls a star from outside its training domain towards the domain's
    edge, so its own labels cannot tell that the star lies outside. Pass the
    two-label model's maximum-likelihood labels (Li 2021 eq. 3) when it has a
    prior: a prior pulls a star towards the training labels too, while the
    likelihood alone says where the spectrum lies (:func:`add_teff_logg_model`
    does this).

    Parameters
    ----------
    teff2, logg2 : (n,) array
        Teff [K] and log g [dex] of the two-label model.
    domain3 : (2, 2) array
        The three-label model's (min, max) of Teff [K] (row 0) and log g [dex] (row 1),
        e.g. the first two rows of :meth:`mdslam.slam.SLAM.domain_array`.

    Returns
    -------
    (n,) bool array
        True: three-label model. A star whose two-label fit gave no Teff or log g (NaN)
        keeps the three-label labels.
    """
    t, g = np.asarray(teff2, float), np.asarray(logg2, float)
    dom = np.asarray(domain3, float)
    if dom.shape != (2, 2):
        raise ValueError(f"domain3 must be (2, 2) [(Teff min, max), (log g min, max)], got {dom.shape}")
    known = np.isfinite(t) & np.isfinite(g)
    with np.errstate(invalid="ignore"):
        inside = (t >= dom[0, 0]) & (t <= dom[0, 1]) & (g >= dom[1, 0]) & (g <= dom[1, 1])
    return inside | ~known


def add_teff_logg_model(cat: Table, pred2: Table, domain3: np.ndarray, *,
                        model_names: tuple[str, str] = ("3-label", "2-label")) -> Table:
    """Add a two-label (Teff, log g) model to a three-label catalogue and route the headline labels.

    ``TEFF``, ``LOGG`` and their ``_ERR``, ``_ERR_CV`` become those of the model
    that :func:`teff_logg_route` picks for each star; the three-label model's own
    Teff and log g stay in ``TEFF_3L``, ``LOGG_3L`` and the two-label model's in
    ``TEFF_2L``, ``LOGG_2L`` (with ``_ERR``) and ``FLAG_2L``, so no label is lost.
    The route follows the two-label model's maximum-likelihood labels (``teff_ml``,
    ``logg_ml`` when it has a prior, else ``teff``, ``logg``); ``TEFF_ML`` and
    ``LOGG_ML`` (if present) are routed with ``TEFF`` and ``LOGG``.
    ``TEFF_MODEL``, ``LOGG_MODEL``, ``FE_H_MODEL`` name the model of each headline
    label. ``FE_H`` stays the three-label model's; for a star routed to the
    two-label model, ``FLAG`` gains the ``OUTSIDE_DOMAIN`` bit of [Fe/H]
    (:class:`mdslam.flags.LabelFlag`). ``TEFF_CV``, ``LOGG_CV`` (if present) stay
    the three-label model's CV labels.

    Parameters
    ----------
    cat : Table
        :func:`build_catalogue` of the three-label model (``TEFF``, ``LOGG``, ``FE_H``,
        ``FLAG``; ``meta["LABELS"]`` names the labels in the model's order).
    pred2 : Table
        :meth:`mdslam.slam.SLAM.predict_table` of the two-label model on the same stars,
        same order (``teff``, ``logg``, ``e_teff``, ``e_logg``, optionally
        ``e_<label>_cv``, ``flag``; ``id`` is checked against ``cat`` when both have ids).
    domain3 : (n_label, 2) array
        The three-label model's label domain (:meth:`mdslam.slam.SLAM.domain_array`).
    model_names : (str, str)
        The values of the ``*_MODEL`` columns for the three- and two-label model.

    Returns
    -------
    Table
        A copy of ``cat`` with the columns above; ``meta["ROUTE"]`` counts the stars of each route.

    Raises
    ------
    ValueError
        ``pred2`` has another length, or other ids, than ``cat``.
    """
    if len(pred2) != len(cat):
        raise ValueError(f"pred2 has {len(pred2)} rows, the catalogue {len(cat)}: label the same stars")
    names3 = [n for n in str(cat.meta.get("LABELS", "teff,logg,fe_h")).split(",") if n]
    if "id" in pred2.colnames and "SOURCE_ID" in cat.colnames and \
            not np.array_equal(np.asarray(pred2["id"]), np.asarray(cat["SOURCE_ID"])):
        raise ValueError("pred2: ids differ from the catalogue's SOURCE_ID: label the same stars in the same order")
    dom = np.asarray(domain3, float)[[names3.index("teff"), names3.index("logg")]]
    ml2 = {n: pred2[f"{n}_ml"] if f"{n}_ml" in pred2.colnames else pred2[n] for n in ("teff", "logg")}
    route3 = teff_logg_route(ml2["teff"], ml2["logg"], dom)
    out = Table(cat, copy=True)
    for n in ("teff", "logg"):
        _route_label(out, pred2, n, route3, ml2[n], model_names)
    out["FE_H_MODEL"] = np.full(len(out), model_names[0])
    out["FE_H_MODEL"].description = f"model that gave FE_H: always the {model_names[0]} model"
    if "FLAG" in out.colnames and "fe_h" in names3:
        bit = int(LabelFlag.OUTSIDE_DOMAIN) << names3.index("fe_h")
        out["FLAG"] = np.where(route3, np.asarray(out["FLAG"]), np.asarray(out["FLAG"]) | bit)
        out["FLAG"].description = (f"{cat['FLAG'].description or 'bit flags'}; the FE_H OUTSIDE_DOMAIN bit also "
                                   f"marks a star routed to the {model_names[1]} model")
    if "flag" in pred2.colnames:
        _copy_col(out, "FLAG_2L", pred2["flag"], f"bit flags of the {model_names[1]} model (labels teff, logg)")
    out.meta["ROUTE"] = f"{int(route3.sum())} {model_names[0]}, {int((~route3).sum())} {model_names[1]}"
    return out


def _route_label(out: Table, pred2: Table, n: str, route3: np.ndarray, ml2, model_names: tuple[str, str]) -> None:
    """Label ``n`` (teff or logg) of :func:`add_teff_logg_model`, in place: the ``_3L``, ``_2L`` copies,
    the routed ``<COL>``, ``_ERR``, ``_ERR_CV``, ``_ML`` (unit kept, descriptions say what each row
    holds) and ``<COL>_MODEL``; ``ml2`` is the two-label model's maximum-likelihood label."""
    col, unit, what = LABEL_COLUMNS[n]
    head3, head2 = out.meta.get("HEADLINE", _ML), pred2.meta.get("HEADLINE", _ML)
    _copy_col(out, f"{col}_3L", out[col], f"SLAM {what} of the {model_names[0]} model", unit)
    _copy_col(out, f"{col}_2L", pred2[n], f"SLAM {what} of the {model_names[1]} (Teff, log g) model", unit)
    _copy_col(out, f"{col}_2L_ERR", pred2[f"e_{n}"], f"uncertainty of {col}_2L: "
              f"{pred2[f'e_{n}'].description or 'formal'}", unit)
    e_cv = pred2[f"e_{n}_cv"] if f"e_{n}_cv" in pred2.colnames else None
    two = f"rows with {col}_MODEL = {model_names[1]}: the {model_names[1]} model's"
    for suffix, src, note in (("", pred2[n], head2),
                              ("_ERR", pred2[f"e_{n}"], pred2[f"e_{n}"].description or "formal uncertainty"),
                              ("_ERR_CV", e_cv, "empirical uncertainty"), ("_ML", ml2, _ML)):
        if f"{col}{suffix}" in out.colnames and src is not None:
            _route_column(out, f"{col}{suffix}", route3, src, f"{two} {note}")
    out[col].description = (f"SLAM {what} of the model in {col}_MODEL ({ROUTE_RULE}): the {model_names[0]} "
                            f"model's {head3}, the {model_names[1]} model's {head2}")
    out[f"{col}_MODEL"] = np.where(route3, model_names[0], model_names[1])
    out[f"{col}_MODEL"].description = f"model that gave {col}: {model_names[0]} or {model_names[1]}"


def _route_column(out: Table, name: str, keep: np.ndarray, other, note: str) -> None:
    """``out[name]`` where ``keep``, else ``other``, in place; the unit kept, ``note`` (what the
    other rows hold) appended to the description."""
    old = out[name]
    out[name] = np.where(keep, np.asarray(old, float), np.asarray(other, float))
    out[name].unit = old.unit
    out[name].description = "; ".join(t for t in (old.description, note) if t)


def _copy_col(out: Table, name: str, values, description: str, unit: str | None = None) -> None:
    """``out[name] = values`` with a description and (optionally) a unit, in place."""
    out[name] = np.asarray(values)
    out[name].description = description
    if unit:
        out[name].unit = unit


def write_catalogue(table: Table, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``table`` as a FITS binary table with every column's unit and description.

    Units go to ``TUNITn`` as strings, including those FITS does not define
    (``dex``); descriptions go to ``TCOMMn`` and, shortened, to the comment of
    ``TTYPEn``. String metadata of ``table.meta`` with keys of at most 8
    characters go to the primary header.

    Parameters
    ----------
    table : Table
    path : path-like
    overwrite : bool

    Returns
    -------
    Path of the written file.
    """
    path = Path(path)
    plain = Table(table, copy=True)
    for c in plain.colnames:
        plain[c].unit = None
        plain[c].description = None
    plain.meta = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hdu = fits.table_to_hdu(plain)
    for i, c in enumerate(table.colnames, start=1):
        unit = table[c].unit
        if unit is not None and str(unit):
            hdu.header[f"TUNIT{i}"] = unit.to_string() if hasattr(unit, "to_string") else str(unit)
        desc = table[c].description
        if desc:
            hdu.header.comments[f"TTYPE{i}"] = desc[:47]
            hdu.header[f"TCOMM{i}"] = desc
    hdu.name = "CATALOGUE"
    primary = fits.PrimaryHDU()
    from . import __version__

    primary.header["CREATOR"] = (f"mdslam {__version__}", "software that wrote this file")
    reserved = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "EXTNAME", "CREATOR", "XTENSION", "PCOUNT", "GCOUNT"}
    for k, v in table.meta.items():
        if isinstance(k, str) and len(k) <= 8 and k.upper() not in reserved \
                and isinstance(v, (str, int, float, bool, np.integer, np.floating)):
            primary.header[k.upper()] = v
    fits.HDUList([primary, hdu]).writeto(path, overwrite=overwrite)
    return path


def read_catalogue(path: str | os.PathLike) -> Table:
    """Read a catalogue written by :func:`write_catalogue`, units and descriptions restored."""
    import astropy.units as u

    with fits.open(path) as hdul:
        hdu = hdul["CATALOGUE"] if "CATALOGUE" in hdul else hdul[1]
        header = hdu.header.copy()
        meta = {k: hdul[0].header[k] for k in hdul[0].header if k not in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = Table.read(hdu, unit_parse_strict="silent")
    for i, c in enumerate(t.colnames, start=1):
        unit = header.get(f"TUNIT{i}")
        t[c].unit = u.Unit(unit, parse_strict="silent") if unit else None
        t[c].description = header.get(f"TCOMM{i}")
    t.meta.update(meta)
    return t


def describe_columns(table: Table) -> Table:
    """One row per column: name, unit, type, description and the count of finite values.

    Parameters
    ----------
    table : Table
        A catalogue (e.g. from :func:`build_catalogue` or :func:`read_catalogue`).

    Returns
    -------
    Table
        Columns ``column``, ``unit``, ``type``, ``n_valid``, ``description`` (for the book).
    """
    rows = []
    for c in table.colnames:
        col = table[c]
        kind = np.asarray(col).dtype
        if kind.kind == "f":
            n_valid = int(np.isfinite(np.asarray(col, float)).sum())
        else:
            n_valid = len(col) - int(np.sum(getattr(col, "mask", False)))
        rows.append((c, str(col.unit or ""), kind.name if kind.kind != "U" else "str", n_valid,
                     str(col.description or "")))
    return Table(rows=rows, names=("column", "unit", "type", "n_valid", "description"),
                 dtype=(str, str, str, int, str))


def mean_std_text(values: np.ndarray, fmt: str = "+.2f", min_n: int = MIN_N_SCATTER, unit: str = "") -> str:
    """``"mean ± std (n=..)"`` of the finite values, or the values themselves when n < ``min_n``.

    A standard deviation of fewer than ``min_n`` values says little; the book
    then lists the values instead (``"n=3: -0.10, +0.02, +0.15"``). The mean (as L21
    Table 3 and sec. 5 quote it), where :meth:`mdslam.validation.Comparison.format`
    gives the median; the same threshold.

    Parameters
    ----------
    values : array_like
    fmt : str
        Format of each number.
    min_n : int
        Smallest n quoted as mean ± std.
    unit : str
        Appended after the numbers.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    u = f" {unit}" if unit else ""
    if v.size == 0:
        return "n=0"
    if v.size < min_n:
        return f"n={v.size}: " + ", ".join(f"{x:{fmt}}" for x in np.sort(v)) + u
    return f"{np.mean(v):{fmt}} ± {np.std(v):{fmt.lstrip('+')}}{u} (n={v.size})"


def qiu2025_table4(cat: Table, *, feh_niu: np.ndarray | None = None,
                   feh_niu_err: np.ndarray | None = None, feh_description: str | None = None,
                   extra: Sequence[str] = ("FLAG", "TEFF_MODEL", "LOGG_MODEL", "FE_H_MODEL")) -> Table:
    """The columns of Qiu et al. 2025 Table 4 from a :func:`build_catalogue` table.

    ``Teff``, ``e_Teff``, ``logg``, ``e_logg``, ``alphaM``, ``e_alphaM``, ``FeH``,
    ``e_FeH``, ``FeH_niu``, ``e_FeH_niu`` with the units and descriptions of the
    paper's table (:data:`QIU2025_TABLE4`); the uncertainties are the empirical
    ``<LABEL>_ERR_CV`` (``a * SNR^b``, Qiu eqs. 6-8) where present, else the
    formal ``<LABEL>_ERR``. A label the model does not have is NaN. Qiu's
    Table 4 names no flag column; the columns in ``extra`` (default ``FLAG`` and the
    ``*_MODEL`` columns of :func:`add_teff_logg_model`, those present) follow, with
    their own descriptions.

    Parameters
    ----------
    cat : Table
        From :func:`build_catalogue` (``TEFF``, ``LOGG``, ``FE_H``, optionally ``ALPHA_M``).
    feh_niu, feh_niu_err : (n,) array, optional
        [Fe/H] of a model trained on Niu et al. 2023-calibrated labels [dex]; NaN if
        not given.
    feh_description : str, optional
        Replaces the printed description of ``FeH`` when the model's [Fe/H] is on
        another scale (e.g. "trained on APOGEE DR17 [Fe/H]").
    extra : sequence of str
        Columns of ``cat`` copied after the Table 4 columns (those present).

    Returns
    -------
    Table
        Identifier columns of ``cat`` (those before ``SNR``), ``SNR``, the ten
        Table 4 columns, then ``extra``.
    """
    n = len(cat)
    out = Table()
    for c in cat.colnames:
        if c == "SNR":
            break
        out[c] = cat[c]
    if "SNR" in cat.colnames:
        out["SNR"] = cat["SNR"]
    src = {"Teff": "TEFF", "logg": "LOGG", "alphaM": "ALPHA_M", "FeH": "FE_H"}
    for name, (unit, desc) in QIU2025_TABLE4.items():
        base = name[2:] if name.startswith("e_") else name
        if base == "FeH_niu":
            vals = feh_niu_err if name.startswith("e_") else feh_niu
            vals = np.full(n, np.nan) if vals is None else np.asarray(vals, float)
        else:
            col = src[base]
            if name.startswith("e_"):
                col = f"{col}_ERR_CV" if f"{col}_ERR_CV" in cat.colnames else f"{col}_ERR"
            vals = np.asarray(cat[col], float) if col in cat.colnames else np.full(n, np.nan)
        out[name] = vals
        out[name].unit = unit
        out[name].description = feh_description if (name == "FeH" and feh_description) else desc
    for c in extra:
        if c in cat.colnames:
            out[c] = cat[c]
    out.meta.update(cat.meta)
    return out
