"""Chapter 6's analyses: [Fe/H] of the two stars of wide binaries (L21 sec. 5.2, Q25 sec. 4.3.1).

* :func:`carmenes_pairs`: the two-star CARMENES systems with the literature [Fe/H] of both;
* :func:`pair_counts`: M+M and FGK+M pairs, close ones, with both [Fe/H];
* :func:`literature_pairs`, :func:`b20_companions`: the catalogue checks;
* :func:`slam_pairs`, :func:`slam_pair_samples`: the pairs with SLAM labels;
* :func:`pair_table`: one row of statistics per sample.

Every [Fe/H] is in dex; a sample is a :class:`PairSample`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from .. import catalogue, crossmatch, selection, validation
from .chapter import subsample

__all__ = ["PairSample", "carmenes_pairs", "pair_counts", "literature_pairs", "b20_companions", "SlamPairs",
           "slam_pairs", "slam_pair_samples", "pair_table"]


@dataclass
class PairSample:
    """[Fe/H] of the two components of a set of pairs and their statistics.

    Attributes
    ----------
    x1, x2 : (n,) arrays
        Component 1 and 2 [dex] (as plotted: x against y).
    stats : mdslam.validation.PairStatistics
    has_errors : bool
        The published or model uncertainties of both components enter ``stats.normalized``;
        False: a nominal error stands in and only ``stats.delta`` means anything.
    """

    x1: np.ndarray
    x2: np.ndarray
    stats: validation.PairStatistics
    has_errors: bool


def carmenes_pairs(cif: Table, n_max: int | None = None, seed: int = 42) -> Table:
    """The two-star systems of CARMENES cif03 with the literature ``Fe_H`` of both stars.

    Parameters
    ----------
    cif : Table
        ``carmenes_cif03``.
    n_max, seed : int, optional
        At most ``n_max`` systems, drawn with :func:`mdslam.compendium.chapter.subsample`.

    Returns
    -------
    Table
        :func:`mdslam.crossmatch.carmenes_pairs` with ``feh1``, ``feh2`` [dex] (NaN: none published).
    """
    pairs = crossmatch.carmenes_pairs(cif)
    pairs = pairs[np.isin(pairs["ID_system"], subsample(pairs["ID_system"], n_max, seed))]
    pairs = crossmatch.attach_component_values(pairs, cif, right_col="GaiaDR3_id", value_cols=("Fe_H",))
    pairs.rename_columns(["Fe_H_1", "Fe_H_2"], ["feh1", "feh2"])
    return pairs


def pair_counts(pairs: Table, max_separation_au: float) -> Table:
    """M+M and FGK+M pairs: all, closer than ``max_separation_au`` [au], with both ``feh1``, ``feh2``."""
    close = pairs["s01_au"] < max_separation_au
    rows = []
    for kind in ("M+M", "FGK+M"):
        k = pairs["kind"] == kind
        both = k & np.isfinite(pairs["feh1"]) & np.isfinite(pairs["feh2"])
        rows.append((kind, int(k.sum()), int((k & close).sum()), int(both.sum()), int((both & close).sum())))
    return Table(rows=rows, names=("pair", "N pairs", f"s01 < {max_separation_au:g} au", "both literature Fe_H",
                                   f"both Fe_H, s01 < {max_separation_au:g} au"))


def literature_pairs(pairs: Table, max_separation_au: float, feh_err: float) -> dict[str, PairSample]:
    """Literature [Fe/H] of both components of the close M+M and FGK+M pairs (no published errors).

    ``feh_err`` [dex] is a placeholder for the missing errors: only the differences are used.
    """
    close = pairs["s01_au"] < max_separation_au
    out = {}
    for kind in ("M+M", "FGK+M"):
        k = (pairs["kind"] == kind) & close
        e = np.full(k.sum(), feh_err)
        out[f"literature check: CARMENES {kind}, literature Fe_H"] = PairSample(
            pairs["feh1"][k], pairs["feh2"][k], validation.pair_statistics(pairs["feh1"][k], e, pairs["feh2"][k], e),
            False)
    return out


def b20_companions(b3: Table, feh_err: float) -> tuple[PairSample, int]:
    """B20 Table 3: B20 Cannon [Fe/H] of the M dwarf against its FGK companion's [Fe/H].

    Returns
    -------
    (PairSample, int)
        Component 1 the companion, 2 the M dwarf (statistics of M - companion, nominal errors
        ``feh_err`` [dex]); the number of pairs with both values.
    """
    m_feh = np.asarray(selection.column(b3, "Mdwarf_FEH"), float)
    c_feh = np.asarray(selection.column(b3, "Companion_FEH"), float)
    e = np.full(len(b3), feh_err)
    return (PairSample(c_feh, m_feh, validation.pair_statistics(m_feh, e, c_feh, e), False),
            int((np.isfinite(m_feh) & np.isfinite(c_feh)).sum()))


@dataclass
class SlamPairs:
    """CARMENES pairs with the unflagged SLAM [Fe/H] and the B20 [Fe/H] of their components.

    Attributes
    ----------
    pairs : Table
        The pairs with ``fe_h_{1,2}``, ``e_fe_h_cv_{1,2}`` (SLAM) and ``FE_H_{1,2}`` (B20) [dex].
    both_xp, one_xp, both_b20 : (n,) bool arrays
        Both components, exactly one, labelled by SLAM; both in B20.
    one : Table
        The pairs with one SLAM component: its SLAM [Fe/H], sigma (and ``sigma extrapolated``, the
        SNR outside the error law's fitted range, when the labels have ``e_cv_extrapolated``) and
        the companion's literature Fe_H.
    n_carmenes_in_xp, n_carmenes_in_b20 : int
        CARMENES stars among the labelled stars and in B20.
    flow : Table
        What each flag removes of the CARMENES stars among the labelled stars.
    """

    pairs: Table
    both_xp: np.ndarray
    one_xp: np.ndarray
    both_b20: np.ndarray
    one: Table
    n_carmenes_in_xp: int
    n_carmenes_in_b20: int
    flow: Table


def slam_pairs(pairs: Table, cif: Table, labels: Table, label_names: Sequence[str], b20: Table,
               sky_radius_arcsec: float) -> SlamPairs:
    """Attach the unflagged SLAM labels (by Gaia id) and B20 (on the sky) to both components.

    Parameters
    ----------
    pairs, cif : Table
        :func:`carmenes_pairs` and the CARMENES star table.
    labels : Table
        SLAM labels (``id`` Gaia source_id, ``flag``, ``fe_h``, ``e_fe_h_cv``; optional
        ``e_cv_extrapolated``).
    label_names : sequence of str
    b20 : Table
        B20 Table 6 (``RA``, ``DEC`` [deg], ``FE_H``).
    sky_radius_arcsec : float
        CARMENES x B20 match radius.

    Returns
    -------
    SlamPairs
    """
    in_cif = np.isin(np.asarray(labels["id"]), crossmatch.normalize_gaia_id(cif["GaiaDR3_id"]))
    flow = selection.cut_flow(labels[in_cif], validation.flag_cuts(labels["flag"][in_cif], label_names))
    ok = labels[selection.combine(validation.flag_cuts(labels["flag"], label_names))]
    extra = ("e_cv_extrapolated",) if "e_cv_extrapolated" in labels.colnames else ()
    px = crossmatch.attach_component_values(pairs, ok, right_col="id", value_cols=("fe_h", "e_fe_h_cv", *extra))
    cb = crossmatch.match_sky(cif, b20, sky_radius_arcsec, left_ra="ra", left_dec="dec", right_ra="RA",
                              right_dec="DEC")
    px = crossmatch.attach_component_values(px, cb, right_col="GaiaDR3_id", value_cols=("FE_H",))
    one_xp = np.isfinite(px["fe_h_1"]) ^ np.isfinite(px["fe_h_2"])
    first = np.isfinite(px["fe_h_1"])
    one = px[one_xp]
    one["SLAM [Fe/H] (XP)"] = np.where(first, px["fe_h_1"], px["fe_h_2"])[one_xp]
    one["sigma SLAM"] = np.where(first, px["e_fe_h_cv_1"], px["e_fe_h_cv_2"])[one_xp]
    if extra:  # the error law used outside the SNR range it was fitted on
        one["sigma extrapolated"] = np.where(first, px["e_cv_extrapolated_1"], px["e_cv_extrapolated_2"])[one_xp] > 0.5
    one["companion literature Fe_H"] = np.where(first, px["feh2"], px["feh1"])[one_xp]
    return SlamPairs(px, px["has_1"] & px["has_2"], one_xp,
                     np.isfinite(px["FE_H_1"]) & np.isfinite(px["FE_H_2"]), one, int(in_cif.sum()), len(cb), flow)


def slam_pair_samples(sp: SlamPairs, feh_err: float) -> dict[str, PairSample]:
    """The samples of :class:`SlamPairs` with at least one pair.

    SLAM for both components (with the CV error law), SLAM against the companion's
    literature Fe_H (nominal ``feh_err`` [dex] for the companion), and B20 for both
    components (nominal errors).
    """
    px, both, out = sp.pairs, sp.both_xp, {}
    if both.any():
        out["SLAM (XP): CARMENES pairs, both components"] = PairSample(
            px["fe_h_1"][both], px["fe_h_2"][both],
            validation.pair_statistics(px["fe_h_1"][both], px["e_fe_h_cv_1"][both], px["fe_h_2"][both],
                                       px["e_fe_h_cv_2"][both]), True)
    slam, lit = np.asarray(sp.one["SLAM [Fe/H] (XP)"]), np.asarray(sp.one["companion literature Fe_H"])
    if np.isfinite(lit).any():
        out["SLAM (XP) vs companion literature Fe_H"] = PairSample(
            lit, slam, validation.pair_statistics(slam, np.asarray(sp.one["sigma SLAM"]), lit,
                                                  np.full(len(lit), feh_err)), False)
    b = sp.both_b20
    if b.any():
        e = np.full(int(b.sum()), feh_err)
        out["literature check: CARMENES pairs, both in B20 (Cannon [Fe/H])"] = PairSample(
            px["FE_H_1"][b], px["FE_H_2"][b], validation.pair_statistics(px["FE_H_1"][b], e, px["FE_H_2"][b], e),
            False)
    return out


def pair_table(samples: Mapping[str, PairSample]) -> Table:
    """One row per sample: n, Delta[Fe/H] mean ± std, median, implied sigma per component,
    the width of the normalised difference and the count beyond 3 sigma (the last two with
    the components' own errors only, n >= 5)."""
    rows = []
    for name, s in samples.items():
        st, big = s.stats, s.stats.n >= 5
        width = (f"{st.sigma_fit:.2f}" if (s.has_errors and big)
                 else "no published errors" if not s.has_errors else "n < 5")
        rows.append((name, st.n, catalogue.mean_std_text(st.delta, fmt="+.3f"), f"{st.median:+.3f}" if big else "-",
                     f"{st.std / np.sqrt(2):.3f}" if big else "-", width,
                     st.n_outside_3sigma if s.has_errors else "-"))
    return Table(rows=rows, names=("sample (labels)", "n", "Delta[Fe/H] mean ± std (dex)", "median",
                                   "implied sigma per component", "normalised width (own errors)", "|z| > 3"))
