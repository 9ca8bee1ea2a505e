"""Chapter 5's analyses: Hyades members and OCCAM open clusters against SLAM [Fe/H] (L21 sec. 5.1).

* :func:`hyades_counts`: members by L21's criteria under both readings of the parallax cut;
* :func:`cv_skill`: CV scatter, label spread and skill of the unflagged training stars;
* :func:`cluster_feh`: the cluster [Fe/H] of the OCCAM cluster table;
* :func:`occam_overlap`: OCCAM members x a label table, one row per star, with the flag,
  membership and pre-main-sequence cuts counted;
* :func:`table3`: L21 Table 3 per cluster (mean ± std, or the values when n < 5), beside
  L21's printed rows (:data:`LI2021_TABLE3`);
* :func:`residuals`: this work's [Fe/H] minus the star's and the cluster's OCCAM [Fe/H]
  for named samples.

Every [Fe/H] is in dex.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from astropy.table import Table

from .. import catalogue, crossmatch, selection, validation

__all__ = ["hyades_counts", "cv_skill", "LI2021_TABLE3", "cluster_feh", "occam_overlap", "overlap_summary", "table3",
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


def cv_skill(labels: Table, label_names: Sequence[str], name: str = "fe_h", n_bins: int = 3) -> Table:
    """CV scatter, label spread and skill of ``name`` on the unflagged training stars, all and per SNR bin.

    Parameters
    ----------
    labels : Table
        :func:`mdslam.compendium.tracks.xp_slam_labels` output (``in_train``, ``flag``,
        ``snr``, ``<name>``, ``<name>_apogee``): the training stars carry CV labels.
    label_names : sequence of str
        The model's labels (for the flag cuts of :func:`mdslam.validation.flag_cuts`).
    name : str
        The label.
    n_bins : int
        Equal-count SNR bins after the row of all stars.

    Returns
    -------
    Table
        :func:`mdslam.validation.skill_table` of ``name`` (``scatter`` the RMS of SLAM - reference
        in the label's unit, ``label_std`` the spread of the reference labels, ``skill`` =
        1 - MSE / Var); the first row is all unflagged training stars.
    """
    rows = np.asarray(labels["in_train"], bool) & selection.combine(validation.flag_cuts(labels["flag"],
                                                                                          label_names))
    t = labels[rows]
    return validation.skill_table(np.asarray(t["snr"], float), np.asarray(t[name], float)[:, None],
                                  np.asarray(t[f"{name}_apogee"], float)[:, None], [name], n_bins=n_bins)


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


#: L21 Table 3 as printed: cluster -> (<M_H_AP>, [Fe/H]_OCCAM, N); SLAM [M/H] of the LAMOST M dwarf
#: members and the OCCAM (Donor et al. 2020) [Fe/H] of the same stars [dex]. The table lists 16
#: clusters and 121 stars; L21's text (sec. 5.1) says 138 members of 15 clusters.
LI2021_TABLE3 = {
    "ASCC 16": ("-0.07 ± 0.03", "-0.04 ± 0.03", 5), "ASCC 21": ("-0.21 ± 0.03", "-0.12 ± 0.04", 2),
    "Berkeley 19": ("-0.19", "-0.01", 1), "Berkeley 29": ("0.08", "0.09", 1), "Briceno 1": ("-0.06", "-0.03", 1),
    "Chupina 1": ("-0.63", "-0.35", 1), "Chupina 3": ("-0.11", "-0.11", 1), "Chupina 5": ("-0.83", "-0.65", 1),
    "Collinder 69": ("-0.20 ± 0.08", "-0.21 ± 0.14", 5), "Collinder 70": ("0.01", "-0.01", 1),
    "Koposov 62": ("-0.05", "0.07", 1), "Melotte 20": ("0.05 ± 0.11", "0.05 ± 0.12", 21),
    "Melotte 22": ("0.00 ± 0.13", "0.00 ± 0.09", 66), "NGC 2420": ("-0.23", "-0.26", 1),
    "NGC 2682": ("-0.16 ± 0.25", "-0.22 ± 0.30", 7), "NGC 752": ("-0.17 ± 0.26", "-0.09 ± 0.11", 6)}


def _paper_row(cluster: str) -> str:
    """The L21 Table 3 row of ``cluster`` as text, "-" if the cluster is not in it."""
    row = LI2021_TABLE3.get(str(cluster))
    return "-" if row is None else f"{row[0]} / {row[1]} (N={row[2]})"


def table3(stars: Table, select: np.ndarray, value: str, ref: str, cluster_ref: str | None = None, *,
           rows: np.ndarray | None = None, members: bool = True,
           names: Sequence[str] = ("value", "reference", "last"), paper: bool = False) -> Table:
    """L21 Table 3 analogue: per cluster, N (members, PMS stars), this work's and the reference [Fe/H].

    A star counts only where both its ``value`` and ``ref`` are known: NaN and the
    catalogues' -9999 sentinels (:func:`mdslam.selection.column`) leave it out.

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
    paper : bool
        Add the cluster's row of L21 Table 3 as printed (:data:`LI2021_TABLE3`; "-" if absent).

    Returns
    -------
    Table
        ``Cluster``, ``N``, [``N prob. members``,] ``N PMS``, the three columns (mean ± std, or
        the values when n < 5) [and ``L21 Table 3: <M_H_AP> / [Fe/H]_OCCAM (N)``].
    """
    per, _ = crossmatch.occam_comparison(stars, value, ref, select=select)
    v = np.asarray(selection.column(stars, value), float)
    r = np.asarray(selection.column(stars, ref), float)
    rows = (select if rows is None else np.asarray(rows, bool)) & np.isfinite(v) & np.isfinite(r)
    out = []
    for c in per["cluster"]:
        m = rows & (stars["cluster"] == c)
        if not m.any():
            continue
        counts = (int(m.sum()), int((m & stars["member"]).sum())) if members else (int(m.sum()),)
        if cluster_ref is not None:
            cl = stars[cluster_ref][m][0]
            last = f"{cl:+.2f}" if np.isfinite(cl) else "-"
        else:
            last = _values(v[m] - r[m])
        out.append((c, *counts, int((m & stars["pms"]).sum()), _values(v[m]), _values(r[m]), last,
                    *((_paper_row(c),) if paper else ())))
    return Table(rows=out, names=("Cluster", "N", *(("N prob. members",) if members else ()), "N PMS", *names,
                                  *(("L21 Table 3: <M_H_AP> / [Fe/H]_OCCAM (N)",) if paper else ())))


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
