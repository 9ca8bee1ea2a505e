"""Chapter 5's analyses: Hyades members and OCCAM open clusters against SLAM [Fe/H] (L21 sec. 5.1).

* :func:`hyades_counts`: members by L21's criteria under both readings of the parallax cut;
* :func:`cluster_feh`: the cluster [Fe/H] of the OCCAM cluster table;
* :func:`occam_overlap`: OCCAM members x a label table, one row per star, with the flag,
  membership and pre-main-sequence cuts counted;
* :func:`table3`: L21 Table 3 per cluster (mean ± std, or the values when n < 5);
* :func:`residuals`: this work's [Fe/H] minus the star's and the cluster's OCCAM [Fe/H]
  for named samples.

Every [Fe/H] is in dex.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from astropy.table import Table

from .. import catalogue, crossmatch, selection, validation

__all__ = ["hyades_counts", "cv_scatter", "cluster_feh", "occam_overlap", "overlap_summary", "table3",
           "residuals", "residual_table"]


def hyades_counts(tables: Mapping[str, Table], **gaia_columns) -> Table:
    """Hyades members by L21 sec. 5.1 in each table, with the parallax cut as printed and as a distance.

    Parameters
    ----------
    tables : mapping of str to Table
        Name -> Gaia table (e.g. the candidate list and the cone).
    **gaia_columns
        Column names and radius of :func:`mdslam.selection.hyades_members`.

    Returns
    -------
    Table
        ``table``, ``rows``, ``printed 0.04 < plx < 0.05 mas``, ``read as 0.04-0.05 kpc (20-25 mas)``.
    """
    rows = [(name, len(tab), *(int(selection.hyades_members(tab, distance_reading=reading, **gaia_columns).sum())
                               for reading in (False, True)))
            for name, tab in tables.items()]
    return Table(rows=rows, names=("table", "rows", "printed 0.04 < plx < 0.05 mas",
                                   "read as 0.04-0.05 kpc (20-25 mas)"))


def cv_scatter(labels: Table, label_names: Sequence[str], name: str = "fe_h") -> tuple[float, int]:
    """Standard deviation of SLAM - reference ``name`` over the unflagged training stars (CV labels).

    Parameters
    ----------
    labels : Table
        :func:`mdslam.compendium.tracks.xp_slam_labels` output (``in_train``, ``flag``,
        ``<name>``, ``<name>_apogee``).
    label_names : sequence of str
        The model's labels (for the flag cuts).

    Returns
    -------
    (float, int)
        The scatter (label unit, NaN-ignoring) and the number of stars.
    """
    rows = np.asarray(labels["in_train"], bool) & selection.combine(validation.flag_cuts(labels["flag"],
                                                                                          label_names))
    d = np.asarray(labels[name], float)[rows] - np.asarray(labels[f"{name}_apogee"], float)[rows]
    return float(np.nanstd(d)), int(rows.sum())


def cluster_feh(clusters: Table) -> dict[str, float]:
    """``{NAME: FE_H}`` of an OCCAM cluster table, clusters with a finite [Fe/H] only."""
    feh = np.asarray(selection.column(clusters, "FE_H"), float)
    return {str(n): float(f) for n, f in zip(clusters["NAME"], feh, strict=True) if np.isfinite(f)}


def occam_overlap(occam: Table, labels: Table, label_names: Sequence[str], member_kw: dict,
                  cluster_feh: Mapping[str, float]) -> tuple[Table, Table]:
    """OCCAM members x SLAM labels, one row per star, and what each cut removes.

    Parameters
    ----------
    occam : Table
        OCCAM member table.
    labels : Table
        SLAM labels with ``apogee_id`` and ``flag`` (:func:`mdslam.compendium.tracks.xp_slam_labels`).
    label_names : sequence of str
    member_kw, cluster_feh
        As for :func:`mdslam.crossmatch.occam_stars`.

    Returns
    -------
    stars : Table
        :func:`mdslam.crossmatch.occam_stars` with ``ok`` (no flag set).
    flow : Table
        Label flags, then ``probability member``, then ``not pre-main-sequence``.
    """
    st = crossmatch.occam_stars(occam, labels, member_kw=member_kw, cluster_feh=dict(cluster_feh))
    q = validation.flag_cuts(st["flag"], label_names)
    st["ok"] = selection.combine(q)
    flow = selection.cut_flow(st, {**q, "probability member": st["member"], "not pre-main-sequence": ~st["pms"]})
    return st, flow


def overlap_summary(stars: Mapping[str, Table]) -> Table:
    """Per OCCAM release: rows, stars, stars listed twice or more, unflagged, members and PMS stars."""
    rows = [(dr.upper(), st.meta["N_ROWS"], len(st), int((st["n_listed"] > 1).sum()), int(st["ok"].sum()),
             int((st["ok"] & st["member"]).sum()), int((st["ok"] & st["pms"]).sum()),
             int((st["ok"] & st["member"] & ~st["pms"]).sum()))
            for dr, st in stars.items()]
    return Table(rows=rows, names=("OCCAM", "rows x XP", "stars", "listed twice+", "unflagged", "unflagged members",
                                   "unflagged PMS", "unflagged members, not PMS"))


def _values(v) -> str:
    """:func:`mdslam.catalogue.mean_std_text` without its ``(n=..)``."""
    return catalogue.mean_std_text(v).split(" (n=")[0]


def table3(stars: Table, select: np.ndarray, value: str, ref: str, cluster_ref: str | None = None, *,
           rows: np.ndarray | None = None, members: bool = True,
           names: Sequence[str] = ("value", "reference", "last")) -> Table:
    """L21 Table 3 analogue: per cluster, N (members, PMS stars), this work's and the reference [Fe/H].

    Parameters
    ----------
    stars : Table
        One row per star (:func:`mdslam.crossmatch.occam_stars`: ``cluster``, ``member``, ``pms``).
    select : (n,) bool array
        The stars whose clusters make the table (:func:`mdslam.crossmatch.occam_comparison`, its order).
    value, ref : str
        This work's and the reference [Fe/H] column of the same star [dex].
    cluster_ref : str, optional
        The cluster [Fe/H] column, last column (its first value in the cluster, "-" if NaN);
        without it the last column is ``value - ref``.
    rows : (n,) bool array, optional
        The stars counted in each cluster (default ``select``).
    members : bool
        Count the probability members too.
    names : three str
        Names of the last three columns.

    Returns
    -------
    Table
        ``Cluster``, ``N``, [``N prob. members``,] ``N PMS`` and the three columns: mean ± std,
        or the values when n < 5.
    """
    per, _ = crossmatch.occam_comparison(stars, value, ref, select=select)
    rows = select if rows is None else rows
    out = []
    for c in per["cluster"]:
        m = rows & (stars["cluster"] == c)
        counts = (int(m.sum()), int((m & stars["member"]).sum())) if members else (int(m.sum()),)
        if cluster_ref is not None:
            cl = stars[cluster_ref][m][0]
            last = f"{cl:+.2f}" if np.isfinite(cl) else "-"
        else:
            last = _values(np.asarray(stars[value][m], float) - np.asarray(stars[ref][m], float))
        out.append((c, *counts, int((m & stars["pms"]).sum()), _values(stars[value][m]), _values(stars[ref][m]),
                    last))
    return Table(rows=out, names=("Cluster", "N", *(("N prob. members",) if members else ()), "N PMS", *names))


def residuals(stars: Mapping[str, Table], samples: Mapping[str, Mapping[str, np.ndarray]],
              value: str = "fe_h") -> dict[tuple[str, str, str], np.ndarray]:
    """This work's ``value`` minus the star's (``FE_H``) and the cluster's (``cluster_fe_h``) [Fe/H].

    Parameters
    ----------
    stars : mapping
        Release -> :func:`occam_overlap` stars.
    samples : mapping
        Release -> {sample name: (n,) bool selection}.

    Returns
    -------
    dict
        ``(release, sample, "star" | "cluster")`` -> the finite differences [dex].
    """
    res = {}
    for dr, st in stars.items():
        for name, sel in samples[dr].items():
            for ref, col in (("star", "FE_H"), ("cluster", "cluster_fe_h")):
                d = np.asarray(st[value], float) - np.asarray(selection.column(st, col), float)
                res[(dr, name, ref)] = d[np.asarray(sel, bool) & np.isfinite(d)]
    return res


def residual_table(res: Mapping[tuple[str, str, str], np.ndarray]) -> Table:
    """:func:`residuals` as a table: release, sample, reference, n, mean ± std (n < 5: the values)."""
    rows = [(dr.upper(), name, ref, len(d), catalogue.mean_std_text(d)) for (dr, name, ref), d in res.items()]
    return Table(rows=rows, names=("OCCAM", "stars", "reference [Fe/H]", "n",
                                   "SLAM - reference: mean ± std (n < 5: values)"))
