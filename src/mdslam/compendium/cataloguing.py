"""Chapter 8's analyses: the XP catalogue's inputs, flags, HR-diagram sample and checks.

Each function is one step of the chapter "The catalogue" and returns tables and
numbers the chapter displays and glues: the predictions for every XP M dwarf
(:func:`predict_all`), the flag counts (:func:`flag_counts`), the stars with a
B20 parallax in the HR diagram (:func:`parallax_sample`), the PARSEC isochrones
(:func:`load_isochrones`, :func:`isochrone_offset`), the CV skill of a model
(:func:`cv_skill`), the H-alpha activity of the LAMOST spectra
(:func:`halpha_activity`), whether a track's CV labels beat the mean label
(:func:`cv_against_spread`) and how many stars take their Teff and log g from
the two-label model (:func:`route_counts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from .. import activity, crossmatch, datasets, preprocess, relations, selection, validation
from ..flags import LabelFlag
from ..slam import describe_flag
from .tracks import TrainingSet

__all__ = ["error_law_table", "predict_all", "flag_counts", "ParallaxSample", "parallax_sample",
           "load_isochrones", "isochrone_offset", "colour_correlations", "colour_trend_table", "cv_skill", "halpha_activity",
           "cv_against_spread", "route_counts", "teff_logg_flags"]


def error_law_table(model, cv_table: Table) -> tuple[Table, Table]:
    """Fit the empirical law ``sigma^2 = floor^2 + (a / SNR)^2`` to a model's CV labels (Qiu 2025 eqs. 6-8 use a SNR^b).

    Parameters
    ----------
    model : mdslam.slam.SLAM
        Fitted model (its ``fit_error_law`` stores the law for ``e_<label>_cv``).
    cv_table : Table
        CV labels (:func:`mdslam.compendium.tracks.cv_labels`): ``snr``, ``<label>``, ``<label>_true``.

    Returns
    -------
    law : Table
        The binned CV scatter with ``a``, ``floor`` in ``meta`` (label units, SNR dimensionless).
    summary : Table
        ``label``, ``a``, ``floor``: one row per label.
    """
    names = list(model.label_names_)
    law = model.fit_error_law(cv_table["snr"], np.column_stack([cv_table[f"{n}_true"] for n in names]),
                              np.column_stack([cv_table[n] for n in names]))
    return law, Table({"label": names, "a": law.meta["a"], "floor": law.meta["floor"]})


def predict_all(model, ts: TrainingSet, allx: TrainingSet, n_max: int | None = None,
                seed: int = 42) -> tuple[Table, TrainingSet, np.ndarray]:
    """The model's labels of every XP M dwarf (at most ``n_max``, seeded), training stars marked.

    Parameters
    ----------
    model : mdslam.slam.SLAM
        Fitted on ``ts``.
    ts, allx : TrainingSet
        The training set and the stars to label (:func:`mdslam.compendium.chapter.training_set`
        ``"xp"`` and ``"xp_all"``).
    n_max, seed : int, optional
        Label at most ``n_max`` stars of ``allx``, drawn with :func:`mdslam.sampling.draw`.

    Returns
    -------
    pred : Table
        :meth:`mdslam.slam.SLAM.predict_table` of the stars, shape (n,) rows.
    allx : TrainingSet
        The labelled stars (the draw of ``allx``).
    in_train : (n,) bool array
        The star is in ``ts`` (its main labels are in-sample).
    """
    from .chapter import subsample

    allx = allx.subset(subsample(Table({"i": np.arange(len(allx))}), n_max, seed)["i"])
    in_train = np.isin(np.asarray(allx.labels["id"]), np.asarray(ts.labels["id"]))
    pred = model.predict_table(allx.spectra.flux, allx.spectra.ivar, snr=allx.snr, ids=allx.labels["id"])
    return pred, allx, in_train


def flag_counts(flags: np.ndarray, label_names: Sequence[str]) -> Table:
    """How many stars carry each flag value, with its meaning.

    Parameters
    ----------
    flags : (n,) int array
        SLAM flag bits (:class:`mdslam.flags.LabelFlag`).
    label_names : sequence of str

    Returns
    -------
    Table
        ``flag``, ``n``, ``meaning`` (``"ok"`` for 0), one row per distinct value.
    """
    vals, counts = np.unique(np.asarray(flags), return_counts=True)
    return Table({"flag": vals, "n": counts,
                  "meaning": ["; ".join(describe_flag(int(v), label_names)) or "ok" for v in vals]})


@dataclass
class ParallaxSample:
    """The unflagged catalogue stars with a B20 parallax (the HR diagram of chapter 8).

    Attributes
    ----------
    table : Table
        Catalogue x B20 x XP photometry, unflagged rows (``*_cat``, ``PLX`` [mas], Gaia magnitudes).
    mg : (n,) array
        Absolute G magnitude [mag], ``A_G = 0``.
    bp_rp : (n,) array
        Gaia BP - RP [mag].
    n_matched : int
        Catalogue stars with a B20 parallax before the flag cut.
    """

    table: Table
    mg: np.ndarray
    bp_rp: np.ndarray
    n_matched: int


def parallax_sample(cat: Table, b20: Table, photometry: Table, label_names: Sequence[str]) -> ParallaxSample:
    """Match the catalogue to B20 (parallaxes, by APOGEE_ID) and to the XP photometry; keep unflagged rows.

    Parameters
    ----------
    cat : Table
        :func:`mdslam.catalogue.build_catalogue` output (``APOGEE_ID``, ``SOURCE_ID``, ``FLAG``).
    b20 : Table
        B20 Table 6 (``APOGEE_ID``, ``PLX`` [mas]).
    photometry : Table
        ``id`` (Gaia source_id) and ``gaiaedr3_phot_{g,bp,rp}_mean_mag`` [mag].
    label_names : sequence of str

    Returns
    -------
    ParallaxSample
    """
    xb = crossmatch.match_apogee_id(cat, b20, left_col="APOGEE_ID", right_col="APOGEE_ID",
                                    table_names=("cat", "b20"))
    phot = photometry[["id", "gaiaedr3_phot_g_mean_mag", "gaiaedr3_phot_bp_mean_mag", "gaiaedr3_phot_rp_mean_mag"]]
    xb = crossmatch.match_gaia_id(xb, phot, left_col="SOURCE_ID", right_col="id")
    n_matched = len(xb)
    xb = xb[selection.combine(validation.flag_cuts(xb["FLAG"], label_names))]
    mg = relations.absolute_magnitude(xb["gaiaedr3_phot_g_mean_mag"], xb["PLX"])
    bprp = np.asarray(xb["gaiaedr3_phot_bp_mean_mag"] - xb["gaiaedr3_phot_rp_mean_mag"], float)
    return ParallaxSample(xb, mg, bprp, n_matched)


def load_isochrones(nodes: Sequence[tuple[float, float]], min_logg: float = 4.0) -> tuple[list[Table], str]:
    """PARSEC isochrones at (age [Gyr], [M/H] [dex]) nodes, or none and why.

    Returns
    -------
    isochrones : list of Table
        :func:`mdslam.isochrones.parsec_isochrone` of each node (dwarf part, ``logg >= min_logg``);
        empty when the isochrone packages are not installed.
    note : str
        ``""``, or ``"not drawn: <reason>"``.
    """
    from .. import isochrones

    try:
        return [isochrones.parsec_isochrone(a, m, min_logg=min_logg) for a, m in nodes], ""
    except (datasets.DatasetUnavailableError, ImportError) as exc:
        return [], f"not drawn: {exc}"


def isochrone_offset(mg: np.ndarray, bp_rp: np.ndarray, isochrone: Table | None) -> np.ndarray:
    """``M_G`` of each star minus the isochrone's ``M_G`` at the star's BP - RP [mag].

    NaN outside the isochrone's colour range, and everywhere without an isochrone;
    negative: the star is brighter than the isochrone. Shape of ``mg``.
    """
    if isochrone is None:
        return np.full(len(mg), np.nan)
    o = np.argsort(isochrone["BP_RP"])
    return mg - np.interp(bp_rp, np.asarray(isochrone["BP_RP"])[o], np.asarray(isochrone["G"])[o],
                          left=np.nan, right=np.nan)


def colour_correlations(bp_rp: np.ndarray, mg: np.ndarray, table: Table,
                        columns: Sequence[str]) -> tuple[dict[str, float], np.ndarray]:
    """Pearson r of BP - RP with each of ``columns`` over the stars with a finite colour and ``M_G``.

    Returns
    -------
    r : dict
        Column name -> r.
    used : (n,) bool array
        The stars the correlations use.
    """
    fin = np.isfinite(bp_rp) & np.isfinite(mg)
    return {c: float(np.corrcoef(bp_rp[fin], np.asarray(table[c], float)[fin])[0, 1]) for c in columns}, fin


def colour_trend_table(bp_rp: np.ndarray, mg: np.ndarray,
                       columns: dict[str, tuple[np.ndarray, np.ndarray | None]]) -> Table:
    """How closely each label set follows colour and absolute magnitude (the CMD of Q25 Fig. 9).

    Parameters
    ----------
    bp_rp, mg : (n,) arrays
        Gaia BP - RP and M_G [mag].
    columns : dict
        Row name -> ``(values, reference)``: (n,) label values and, optionally,
        (n,) reference labels of the same stars (e.g. APOGEE's) or None.

    Returns
    -------
    Table
        Per row, over the stars with a finite colour, M_G and value: ``labels``,
        ``n``, ``std`` (ddof=0, label unit), ``r BP-RP`` and ``r M_G`` (Pearson), ``slope per mag BP-RP``
        (least squares, label unit per mag) and ``slope on reference``
        (:func:`mdslam.validation.regression_slope` of the values on the
        reference, 1 unshrunk; NaN without a reference).
    """
    x, m = np.asarray(bp_rp, float), np.asarray(mg, float)
    rows = []
    for name, (values, ref) in columns.items():
        v = np.asarray(values, float)
        use = np.isfinite(x) & np.isfinite(m) & np.isfinite(v)
        if use.sum() < 3:
            rows.append((name, int(use.sum()), np.nan, np.nan, np.nan, np.nan, np.nan))
            continue
        slope_ref = np.nan if ref is None else validation.regression_slope(v[use], np.asarray(ref, float)[use])
        rows.append((name, int(use.sum()), float(np.std(v[use])), float(np.corrcoef(x[use], v[use])[0, 1]),
                     float(np.corrcoef(m[use], v[use])[0, 1]), validation.regression_slope(v[use], x[use]),
                     slope_ref))
    return Table(rows=rows, names=("labels", "n", "std", "r BP-RP", "r M_G", "slope per mag BP-RP",
                                   "slope on reference"), dtype=(str, int, float, float, float, float, float))


def cv_skill(cv_table: Table, label_names: Sequence[str]) -> tuple[Table, Table, dict[str, object], np.ndarray]:
    """CV bias, scatter, label spread and skill (1 - MSE/Var) of the unflagged CV labels.

    Parameters
    ----------
    cv_table : Table
        :func:`mdslam.compendium.tracks.cv_labels` output (``flag``, ``snr``, labels, ``<label>_true``).
    label_names : sequence of str

    Returns
    -------
    flow : Table
        What each flag removes (:func:`mdslam.selection.cut_flow`).
    table : Table
        :func:`mdslam.validation.skill_table` of the unflagged rows.
    overall : dict
        Label -> the row of ``table`` over all SNR (``n``, ``scatter``, ``label_std``, ``skill``).
    ok : (n,) bool array
        The unflagged rows.
    """
    names = list(label_names)
    cuts = validation.flag_cuts(cv_table["flag"], names)
    ok = selection.combine(cuts)
    sk = validation.skill_table(np.asarray(cv_table["snr"], float)[ok],
                                np.column_stack([np.asarray(cv_table[n], float) for n in names])[ok],
                                np.column_stack([np.asarray(cv_table[f"{n}_true"], float) for n in names])[ok],
                                names)
    overall: dict[str, object] = {}
    for row in sk:  # the first row of each label is over all stars
        overall.setdefault(row["label"], row)
    return selection.cut_flow(cv_table, cuts), sk, overall, ok


def halpha_activity(raw) -> tuple[Table, Table]:
    """H-alpha equivalent widths and activity of spectra, and the active count per subclass (L21 sec. 4.4).

    Parameters
    ----------
    raw : mdslam.spectra.Spectra
        Observed spectra (vacuum wavelengths [A]) with ``z`` (NaN: no redshift, taken
        as 0), ``obsid`` and ``subclass`` in ``meta``.

    Returns
    -------
    ha : Table
        :func:`mdslam.activity.halpha_table` in the rest frame, with ``subclass``.
    per_subclass : Table
        ``subclass``, ``n``, ``active``.
    """
    z = np.nan_to_num(np.asarray(raw.meta["z"], float))
    ha = activity.halpha_table(preprocess.to_rest_frame(raw.wavelength, z=z), raw.flux, raw.ivar,
                               ids=np.asarray(raw.meta["obsid"]))
    ha["subclass"] = np.asarray(raw.meta["subclass"]).astype(str)
    sub = Table({"subclass": sorted(set(ha["subclass"]))})
    sub["n"] = [int(np.sum(ha["subclass"] == c)) for c in sub["subclass"]]
    sub["active"] = [int(np.sum(ha["active"] & (ha["subclass"] == c))) for c in sub["subclass"]]
    return ha, sub


def cv_against_spread(cv_table: Table, label_names: Sequence[str]) -> Table:
    """Does each CV label beat the mean label? CV scatter against the spread of the labels.

    Parameters
    ----------
    cv_table : Table
        CV labels (``<label>``, ``<label>_true``), the rows to use (e.g. unflagged).
    label_names : sequence of str

    Returns
    -------
    Table
        One row per label: ``label``, ``distinct values`` of the reference,
        ``std of labels``, ``CV median (SLAM - lit)``, ``CV std`` (label units)
        and ``CV std / label std`` (>= 1: no better than the mean label).
    """
    rows = []
    for n in label_names:
        truth, est = np.asarray(cv_table[f"{n}_true"], float), np.asarray(cv_table[n], float)
        d = est - truth
        rows.append((n, len(np.unique(truth)), float(np.nanstd(truth)), float(np.nanmedian(d)),
                     float(np.nanstd(d)), float(np.nanstd(d) / np.nanstd(truth))))
    return Table(rows=rows, names=("label", "distinct values", "std of labels", "CV median (SLAM - lit)",
                                   "CV std", "CV std / label std"))


def route_counts(cat: Table, label_names: Sequence[str]) -> Table:
    """How many catalogue stars take each model route, and how many of their [Fe/H] are flagged.

    Parameters
    ----------
    cat : Table
        :func:`mdslam.catalogue.add_teff_logg_model` output (``TEFF_MODEL``, ``FLAG``).
    label_names : sequence of str
        The three-label model's labels, in its order (for the [Fe/H] OUTSIDE_DOMAIN bit).

    Returns
    -------
    Table
        One row per value of ``TEFF_MODEL``: ``Teff, log g from``, ``n``, ``FE_H flagged``
        (its OUTSIDE_DOMAIN bit set) and ``unflagged`` (``FLAG == 0``).
    """
    bit = int(LabelFlag.OUTSIDE_DOMAIN) << list(label_names).index("fe_h")
    route = np.asarray(cat["TEFF_MODEL"]).astype(str)
    flag = np.asarray(cat["FLAG"]).astype(np.int64)
    rows = [(r, int(np.sum(route == r)), int(np.sum((route == r) & (flag & bit > 0))),
             int(np.sum((route == r) & (flag == 0)))) for r in sorted(set(route), reverse=True)]
    return Table(rows=rows, names=("Teff, log g from", "n", "FE_H flagged", "unflagged"),
                 dtype=(str, int, int, int))


def teff_logg_flags(cat: Table, label_names: Sequence[str]) -> np.ndarray:
    """The flags of each star's headline Teff and log g, whatever its [Fe/H] flag.

    A star routed to the two-label model (``TEFF_MODEL == "2-label"``) takes the two-label
    model's ``FLAG_2L``; any other star its ``FLAG`` without the [Fe/H] OUTSIDE_DOMAIN bit.
    Teff and log g are labels 0 and 1 of both models, so their bits agree.

    Parameters
    ----------
    cat : Table
        :func:`mdslam.catalogue.add_teff_logg_model` output.
    label_names : sequence of str
        The three-label model's labels, in its order.

    Returns
    -------
    (n,) int64 array
        :class:`mdslam.flags.LabelFlag` bits, for a Teff/log g sample (e.g. the CMD of Q25 Fig. 9).
    """
    bit = int(LabelFlag.OUTSIDE_DOMAIN) << list(label_names).index("fe_h")
    flag = np.asarray(cat["FLAG"]).astype(np.int64) & ~bit
    return np.where(np.asarray(cat["TEFF_MODEL"]).astype(str) == "2-label",
                    np.asarray(cat["FLAG_2L"]).astype(np.int64), flag)
