"""Cross-matching catalogues: by Gaia source_id, by APOGEE_ID and by sky position.

Every matcher returns one astropy Table with the matched rows of both inputs side
by side (``hstack``; a column name present in both gets the suffix ``_1``/``_2``,
or the ``table_names`` given, except an identically named key column that
matched exactly, which is kept once) and, for sky matches or when positions are
named, a ``sep_arcsec`` column.

Identifier hygiene the catalogues need:

- APOGEE IDs come padded, in bytes or lower case: :func:`normalize_apogee_id`
  strips and upper-cases them.
- Gaia source_ids must be compared as int64. Several tables store them as
  floats (B20's ``birky2020_table6_full`` keeps 15 significant digits; the
  CARMENES tables too): exact equality then fails, and :func:`match_gaia_id`
  with ``rounded=...`` accepts the nearest integer id within a relative
  tolerance. Sky matching is the safer route for such tables.
- Multiple systems come as one row per star with a system id (CARMENES
  cif03 ``ID_system``): :func:`carmenes_pairs` turns its two-star systems into
  one row per pair and :func:`attach_component_values` puts any labelled
  table's values beside each component.
- OCCAM lists a star once per cluster it may belong to (every Briceno 1 star of
  DR17 is also an ASCC 16 row): :func:`occam_stars` keeps one row per star, marks
  probability members and pre-main-sequence stars, and :func:`occam_comparison`
  gives the L21 Table 3 statistics of one selection of them.
- ``birky2020_full_results``' int64 ``GAIA_ID`` column does not belong to its
  rows for most stars (its ids point elsewhere on the sky and to other APOGEE
  stars, mostly giants): join B20 on APOGEE_ID, never on that column.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table, hstack

from mdslam.selection import column

__all__ = [
    "normalize_apogee_id",
    "normalize_gaia_id",
    "match_keys",
    "join_rows",
    "match_gaia_id",
    "match_apogee_id",
    "match_sky",
    "carmenes_pairs",
    "attach_component_values",
    "YOUNG_OCCAM_CLUSTERS",
    "occam_stars",
    "occam_comparison",
    "compare_catalogues",
]


def normalize_apogee_id(ids: Sequence | np.ndarray) -> np.ndarray:
    """APOGEE IDs as stripped, upper-case unicode strings (masked/empty -> ``""``).

    Parameters
    ----------
    ids : array_like of str or bytes, shape (n,)

    Returns
    -------
    ndarray of str, shape (n,)
    """
    arr = np.ma.asarray(ids)
    mask = np.ma.getmaskarray(arr)
    data = np.asarray(arr.data)
    if data.dtype.kind == "S":
        data = np.char.decode(data, "ascii", errors="replace")
    elif data.dtype.kind == "O":
        data = np.array([v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)
                         for v in data.tolist()], dtype=str)
    out = data.astype(str)
    out[mask] = ""
    return np.char.upper(np.char.strip(out))


def normalize_gaia_id(ids: Sequence | np.ndarray) -> np.ndarray:
    """Gaia source_ids as int64; missing or unparsable -> -1.

    Accepts integers, strings such as ``"Gaia DR2 3312744219987686144"`` and
    masked columns. Floats are converted with ``np.int64`` and are only exact
    below 2**53: use :func:`match_gaia_id` with ``rounded=...`` for float ids.

    Parameters
    ----------
    ids : array_like, shape (n,)

    Returns
    -------
    ndarray of int64, shape (n,)
    """
    arr = np.ma.asarray(ids)
    mask = np.ma.getmaskarray(arr)
    if arr.dtype.kind in "iu":
        out = np.ma.filled(arr, -1).astype(np.int64)
    elif arr.dtype.kind == "f":
        vals = np.ma.filled(arr, np.nan).astype(float)
        out = np.where(np.isfinite(vals), vals, -1).astype(np.int64)
    else:
        out = np.full(len(arr), -1, dtype=np.int64)
        for i, v in enumerate(np.ma.filled(arr.astype(str), "").tolist()):
            tok = (v.decode() if isinstance(v, bytes) else str(v)).strip().split(" ")[-1]
            if tok.isdigit():
                out[i] = int(tok)
    out[mask] = -1
    return out


def match_keys(left_keys: np.ndarray, right_keys: np.ndarray,
               invalid: object = None) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs ``(i, j)`` with ``left_keys[i] == right_keys[j]`` (an inner join).

    Parameters
    ----------
    left_keys, right_keys : ndarray, shapes (n,) and (m,)
        Comparable keys of one dtype (ints or strings).
    invalid : scalar, optional
        Key value that never matches (e.g. ``-1`` or ``""``).

    Returns
    -------
    il, ir : ndarray of int, shape (k,)
        Row indices into left and right, ordered by left row. Duplicated keys
        give all combinations, as in SQL.
    """
    lk = np.asarray(left_keys)
    rk = np.asarray(right_keys)
    order = np.argsort(rk, kind="stable")
    rs = rk[order]
    lo = np.searchsorted(rs, lk, side="left")
    hi = np.searchsorted(rs, lk, side="right")
    counts = hi - lo
    if invalid is not None:
        counts = np.where(lk == invalid, 0, counts)
    il = np.repeat(np.arange(len(lk)), counts)
    starts = np.repeat(lo, counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    ir = order[starts + offsets]
    return il, ir


def _separation_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    ok = np.isfinite(ra1) & np.isfinite(dec1) & np.isfinite(ra2) & np.isfinite(dec2)
    sep = np.full(len(ra1), np.nan)
    if ok.any():
        c1 = SkyCoord(ra1[ok], dec1[ok], unit="deg")
        c2 = SkyCoord(ra2[ok], dec2[ok], unit="deg")
        sep[ok] = c1.separation(c2).arcsec
    return sep


def join_rows(left: Table, right: Table, il: np.ndarray, ir: np.ndarray,
              table_names: tuple[str, str] = ("1", "2"),
              positions: tuple[str, str, str, str] | None = None,
              shared_key: str | None = None) -> Table:
    """Rows ``left[il]`` and ``right[ir]`` side by side, optionally with ``sep_arcsec``.

    Parameters
    ----------
    left, right : Table
    il, ir : ndarray of int, shape (k,)
        Matched row indices.
    table_names : (str, str)
        Suffixes for column names present in both tables.
    positions : (left_ra, left_dec, right_ra, right_dec), optional
        Column names (deg) from which a ``sep_arcsec`` column is computed.
    shared_key : str, optional
        A key column of the same name in both tables that matched exactly: kept
        once, under its own name, from ``left``.

    Returns
    -------
    Table, k rows
    """
    rsub = right[ir]
    if shared_key is not None and shared_key in left.colnames and shared_key in rsub.colnames:
        rsub.remove_column(shared_key)
    out = hstack([left[il], rsub], table_names=list(table_names),
                 uniq_col_name="{col_name}_{table_name}", metadata_conflicts="silent")
    if positions is not None:
        lra, ldec, rra, rdec = positions
        out["sep_arcsec"] = _separation_arcsec(column(left, lra)[il], column(left, ldec)[il],
                                               column(right, rra)[ir], column(right, rdec)[ir])
        out["sep_arcsec"].unit = "arcsec"
    return out


def _nearest_rounded(rounded: np.ndarray, exact: np.ndarray, rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """Pair float-rounded ids with the nearest exact int64 id within ``rtol``."""
    ex = exact.astype(float)
    valid_ex = np.flatnonzero(exact > 0)
    order = valid_ex[np.argsort(ex[valid_ex], kind="stable")]
    xs = ex[order]
    r = np.asarray(rounded, float)
    ok = np.isfinite(r) & (r > 0)
    idx_r = np.flatnonzero(ok)
    if len(xs) == 0 or len(idx_r) == 0:
        return np.array([], int), np.array([], int)
    pos = np.clip(np.searchsorted(xs, r[idx_r]), 1, max(len(xs) - 1, 1))
    cand_lo = np.clip(pos - 1, 0, len(xs) - 1)
    cand_hi = np.clip(pos, 0, len(xs) - 1)
    d_lo = np.abs(xs[cand_lo] - r[idx_r])
    d_hi = np.abs(xs[cand_hi] - r[idx_r])
    best = np.where(d_hi < d_lo, cand_hi, cand_lo)
    dist = np.minimum(d_lo, d_hi)
    good = dist <= rtol * np.abs(r[idx_r])
    return idx_r[good], order[best[good]]


def match_gaia_id(left: Table, right: Table, left_col: str = "source_id",
                  right_col: str = "source_id", *, rounded: str | None = None,
                  rtol: float = 1e-14, table_names: tuple[str, str] = ("1", "2"),
                  positions: tuple[str, str, str, str] | None = None) -> Table:
    """Join two tables on Gaia source_id.

    Parameters
    ----------
    left, right : Table
    left_col, right_col : str
        Source-id columns (int64, numeric strings or floats).
    rounded : {None, "left", "right"}
        Which side stores float-rounded ids (e.g. B20's ``GAIA_ID`` with 15
        significant digits). ``None``: exact int64 equality. Otherwise each
        rounded id is paired with the nearest exact id of the other table if
        ``|diff| <= rtol * id``.
    rtol : float
        Relative tolerance for rounded ids; 1e-14 covers ids printed with 15
        significant digits (relative error <= 5e-15). Distinct sources that close
        in id share a HEALPix level-12 pixel, so a wrong pairing is rare but
        possible in dense fields: pass ``positions`` and check ``sep_arcsec``.
    table_names : (str, str)
        Suffixes for clashing column names.
    positions : (left_ra, left_dec, right_ra, right_dec), optional
        Add ``sep_arcsec`` as a check of the match.

    Returns
    -------
    Table
        Matched rows, left columns then right columns. Note: on B20 x Gaia XP
        the rounded match pairs 151 rows of which 9 are wrong neighbours in dense
        fields (Orion, Kepler field), while APOGEE_ID gives 152 correct pairs.
    """
    if rounded is None:
        il, ir = match_keys(normalize_gaia_id(left[left_col]), normalize_gaia_id(right[right_col]),
                            invalid=-1)
        shared = left_col if left_col == right_col else None
    elif rounded == "left":
        shared = None
        il, ir = _nearest_rounded(column(left, left_col, sentinel=False),
                                  normalize_gaia_id(right[right_col]), rtol)
    elif rounded == "right":
        shared = None
        ir, il = _nearest_rounded(column(right, right_col, sentinel=False),
                                  normalize_gaia_id(left[left_col]), rtol)
        o = np.argsort(il, kind="stable")
        il, ir = il[o], ir[o]
    else:
        raise ValueError(f"rounded must be None, 'left' or 'right', got {rounded!r}")
    return join_rows(left, right, il, ir, table_names, positions, shared_key=shared)


def match_apogee_id(left: Table, right: Table, left_col: str = "APOGEE_ID",
                    right_col: str = "APOGEE_ID", *, table_names: tuple[str, str] = ("1", "2"),
                    positions: tuple[str, str, str, str] | None = None) -> Table:
    """Join two tables on APOGEE_ID (stripped, upper case; all pairs of duplicates).

    Parameters
    ----------
    left, right : Table
    left_col, right_col : str
        APOGEE_ID columns (e.g. ``"APOGEE_ID"`` in B20 and OCCAM, ``"apogee_id"``
        in the Gaia XP table).
    table_names : (str, str)
        Suffixes for clashing column names.
    positions : (left_ra, left_dec, right_ra, right_dec), optional
        Add ``sep_arcsec``.

    Returns
    -------
    Table
    """
    il, ir = match_keys(normalize_apogee_id(left[left_col]), normalize_apogee_id(right[right_col]),
                        invalid="")
    out = join_rows(left, right, il, ir, table_names, positions,
                    shared_key=left_col if left_col == right_col else None)
    return out


def match_sky(left: Table, right: Table, radius_arcsec: float = 1.0, *, left_ra: str = "ra",
              left_dec: str = "dec", right_ra: str = "ra", right_dec: str = "dec",
              one_to_one: bool = True, table_names: tuple[str, str] = ("1", "2")) -> Table:
    """Nearest-neighbour sky match within a radius (``SkyCoord.match_to_catalog_sky``).

    Parameters
    ----------
    left, right : Table
        Positions in degrees (ICRS). Compare positions at the same epoch where
        proper motions are large: nearby M dwarfs move up to several arcsec/yr.
    radius_arcsec : float
        Maximum separation.
    left_ra, left_dec, right_ra, right_dec : str
        Coordinate columns (deg); rows with missing coordinates never match.
    one_to_one : bool
        If True (default) a right row matched by several left rows keeps only
        its closest left row.
    table_names : (str, str)
        Suffixes for clashing column names.

    Returns
    -------
    Table
        Matched rows ordered by left row, with ``sep_arcsec``.
    """
    lra, ldec = column(left, left_ra), column(left, left_dec)
    rra, rdec = column(right, right_ra), column(right, right_dec)
    lok = np.flatnonzero(np.isfinite(lra) & np.isfinite(ldec))
    rok = np.flatnonzero(np.isfinite(rra) & np.isfinite(rdec))
    if len(lok) == 0 or len(rok) == 0:
        il = ir = np.array([], int)
        sep = np.array([], float)
    else:
        c1 = SkyCoord(lra[lok], ldec[lok], unit="deg")
        c2 = SkyCoord(rra[rok], rdec[rok], unit="deg")
        idx, d2d, _ = c1.match_to_catalog_sky(c2)
        sep_all = d2d.arcsec
        good = sep_all <= radius_arcsec
        il, ir, sep = lok[good], rok[idx[good]], sep_all[good]
        if one_to_one and len(ir):
            order = np.lexsort((sep, ir))
            first = np.ones(len(order), bool)
            first[1:] = ir[order][1:] != ir[order][:-1]
            keep = np.sort(order[first])
            il, ir, sep = il[keep], ir[keep], sep[keep]
    out = join_rows(left, right, il, ir, table_names)
    out["sep_arcsec"] = sep
    out["sep_arcsec"].unit = "arcsec"
    return out


def _spectral_class(sptnum: np.ndarray, sptype: np.ndarray) -> np.ndarray:
    """'M' for M0-M9.5 (``SpTnum`` 70-79.5), 'FGK' for F, G or K types (``SpTnum`` < 70), else ''."""
    letter = np.char.upper(np.char.ljust(np.char.strip(np.asarray(sptype).astype(str)), 1).astype("U1"))
    out = np.full(len(sptnum), "", dtype="U3")
    out[(sptnum >= 70) & (sptnum < 80)] = "M"
    out[np.isin(letter, ["F", "G", "K"]) & (sptnum < 70)] = "FGK"
    return out


def carmenes_pairs(cif: Table, *, system_col: str = "ID_system", star_col: str = "ID_star",
                   gaia_col: str = "GaiaDR3_id", sep_col: str = "s01") -> Table:
    """The two-star systems of the CARMENES multiplicity catalogue as pairs (Cifuentes et al. 2025).

    Stars sharing a positive ``ID_system`` form a system; systems with exactly two
    catalogued stars become pairs (higher multiples are left out). A star is M for
    ``SpTnum`` 70-79.5 (M0-M9.5) and FGK for an F, G or K spectral type with
    ``SpTnum`` < 70 (white dwarfs and others are neither).

    Parameters
    ----------
    cif : Table
        ``carmenes_cif03``: one row per star with ``ID_system``, ``ID_star``,
        ``SpT``, ``SpTnum``, ``GaiaDR3_id`` and ``s01`` (projected separation, au,
        given on one of the two rows).
    system_col, star_col, gaia_col, sep_col : str
        Column names.

    Returns
    -------
    Table
        One row per pair, ordered by system id: ``ID_system``, ``kind`` (``"M+M"``,
        ``"FGK+M"`` or ``"other"``), ``i1``, ``i2`` (rows of ``cif``; the FGK star is
        component 1 of an FGK+M pair, otherwise the catalogue order is kept),
        ``ID_star1``, ``ID_star2``, ``GaiaDR3_id1``, ``GaiaDR3_id2`` (int64, -1 when
        missing) and ``s01_au`` (the larger finite ``s01`` of the two rows; NaN if
        neither has one).
    """
    sys_id = np.asarray(column(cif, system_col, sentinel=False))
    sys_id = np.where(np.isfinite(sys_id), sys_id, -1).astype(np.int64)
    cls = _spectral_class(np.asarray(column(cif, "SpTnum"), float), np.asarray(cif["SpT"]))
    sep = np.asarray(column(cif, sep_col), float)
    star = np.asarray(cif[star_col])
    gaia = normalize_gaia_id(cif[gaia_col])
    valid = sys_id > 0
    ids, counts = np.unique(sys_id[valid], return_counts=True)
    order = np.argsort(sys_id, kind="stable")
    first = np.searchsorted(sys_id[order], ids[counts == 2])
    i1, i2 = order[first], order[first + 1]
    swap = (cls[i2] == "FGK") & (cls[i1] == "M")
    i1, i2 = np.where(swap, i2, i1), np.where(swap, i1, i2)
    kind = np.where((cls[i1] == "M") & (cls[i2] == "M"), "M+M",
                    np.where((cls[i1] == "FGK") & (cls[i2] == "M"), "FGK+M", "other"))
    both = np.column_stack([sep[i1], sep[i2]])
    with np.errstate(invalid="ignore"):
        s01 = np.where(np.isfinite(both).any(axis=1), np.nanmax(np.where(np.isfinite(both), both, -np.inf), axis=1),
                       np.nan)
    out = Table()
    out["ID_system"] = ids[counts == 2]
    out["kind"] = kind.astype("U5")
    out["i1"], out["i2"] = i1, i2
    out["ID_star1"], out["ID_star2"] = star[i1], star[i2]
    out["GaiaDR3_id1"], out["GaiaDR3_id2"] = gaia[i1], gaia[i2]
    out["s01_au"] = s01
    out["s01_au"].unit = "AU"
    return out


def attach_component_values(pairs: Table, labels: Table, *, right_col: str,
                            value_cols: Sequence[str],
                            left_cols: tuple[str, str] = ("GaiaDR3_id1", "GaiaDR3_id2"),
                            key: str = "gaia") -> Table:
    """Copy of ``pairs`` with ``<value>_1`` and ``<value>_2`` taken from a labelled table.

    Parameters
    ----------
    pairs : Table
        One row per pair (e.g. :func:`carmenes_pairs`).
    labels : Table
        Labels of single stars, keyed by ``right_col``.
    right_col : str
        Key column of ``labels``.
    value_cols : sequence of str
        Float columns of ``labels`` to attach (NaN where a component is not in ``labels``).
    left_cols : (str, str)
        Key columns of the two components in ``pairs``.
    key : {"gaia", "apogee"}
        How keys compare: int64 Gaia source_id or normalised APOGEE_ID. A key that
        appears twice in ``labels`` takes its first row.

    Returns
    -------
    Table
        ``pairs`` plus ``<value>_1``, ``<value>_2`` per value column and ``has_1``,
        ``has_2`` (component found in ``labels``).
    """
    norm = normalize_gaia_id if key == "gaia" else normalize_apogee_id
    invalid = -1 if key == "gaia" else ""
    rk = norm(labels[right_col])
    row: dict = {}
    for j, k in enumerate(rk.tolist()):
        if k != invalid:
            row.setdefault(k, j)
    out = Table(pairs, copy=True)
    for comp, lc in zip((1, 2), left_cols, strict=True):
        idx = np.array([row.get(k, -1) for k in norm(pairs[lc]).tolist()], dtype=int)
        out[f"has_{comp}"] = idx >= 0
        for v in value_cols:
            vals = np.asarray(column(labels, v), float)
            out[f"{v}_{comp}"] = np.where(idx >= 0, vals[np.maximum(idx, 0)] if len(vals) else np.nan, np.nan)
    return out


# --------------------------------------------------------------------------- #
# OCCAM clusters (Li 2021 sec. 5.1, Table 3, Fig. 8)
# --------------------------------------------------------------------------- #
#: OCCAM clusters of the star-forming regions of Orion (Collinder 69 = lambda Ori, Collinder 70,
#: NGC 1980, Sigma Orionis, ASCC 16/19/21 and Briceno 1 in Orion OB1, L 1641S) and Perseus
#: (IC 348), a few to ~20 Myr old: their M stars are pre-main-sequence (an M dwarf contracts
#: for ~0.1-1 Gyr). Older young clusters (alpha Per = Melotte 20, ~50-90 Myr; the Pleiades =
#: Melotte 22, ~110-130 Myr) are not listed: their early M dwarfs are close to the main
#: sequence, and the later ones are caught by the log g test of :func:`occam_stars`.
YOUNG_OCCAM_CLUSTERS: frozenset[str] = frozenset({
    "ASCC 16", "ASCC 19", "ASCC 21", "Briceno 1", "Collinder 69", "Collinder 70", "IC 348",
    "L 1641S", "NGC 1980", "Sigma Orionis"})


def _cluster_name(names) -> np.ndarray:
    """'Melotte_22 ' -> 'Melotte 22' (OCCAM member and cluster tables write names differently)."""
    return np.array([" ".join(str(n).replace("_", " ").split()) for n in np.asarray(names).astype(str)])


def _best_row_per_star(ox: Table, key: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Index of each star's kept row: a member row first, then highest ``CG_PROB``, ``PM_PROB``, ``RV_PROB``."""
    from mdslam import selection

    prob = [np.nan_to_num(np.asarray(selection.column(ox, c), float), nan=-np.inf)
            for c in ("CG_PROB", "PM_PROB", "RV_PROB")] if len(ox) else [np.zeros(0)] * 3
    # lexsort: last key is primary -> key, member (True first), CG, PM, RV descending
    order = np.lexsort((-prob[2], -prob[1], -prob[0], ~member, key))
    _, first = np.unique(key[order], return_index=True)
    return order[first]


def _mark_pms(out: Table, young_clusters: frozenset[str] | set[str], logg_col: str | None,
              logg_pms_max: float) -> None:
    """Add ``young_cluster``, ``low_logg`` (log g [dex] below ``logg_pms_max``) and ``pms`` (either) to ``out``."""
    young = {" ".join(str(c).replace("_", " ").split()) for c in young_clusters}
    out["young_cluster"] = np.isin(out["cluster"], sorted(young))
    if logg_col is not None and logg_col in out.colnames:
        with np.errstate(invalid="ignore"):
            out["low_logg"] = np.asarray(out[logg_col], float) < logg_pms_max
    else:
        out["low_logg"] = np.zeros(len(out), bool)
    out["pms"] = out["young_cluster"] | out["low_logg"]


def occam_stars(occam: Table, labels: Table, *, right_col: str = "apogee_id",
                member_kw: dict | None = None, cluster_feh: dict[str, float] | None = None,
                logg_col: str | None = "logg_apogee", logg_pms_max: float = 4.5,
                young_clusters: frozenset[str] | set[str] = YOUNG_OCCAM_CLUSTERS,
                table_names: tuple[str, str] = ("occam", "xp")) -> Table:
    """OCCAM member rows joined to a label table on APOGEE_ID, one row per star.

    OCCAM lists a star once per cluster whose field it lies in (in DR17 every
    Briceno 1 star is also an ASCC 16 row, and ASCC 19 shares stars with
    Collinder 70), so counting rows counts some stars twice. Here each star keeps
    one row: a row that passes the membership cuts if there is one, then the
    highest ``CG_PROB``, ``PM_PROB``, ``RV_PROB``; the other clusters it is listed
    under stay in ``clusters_listed``.

    Parameters
    ----------
    occam : Table
        An OCCAM member table (``CLUSTER``, ``APOGEE_ID``, ``FE_H``, ``*_PROB``).
    labels : Table
        One row per star with an APOGEE_ID column ``right_col`` (e.g. the SLAM
        labels of ``tracks.xp_slam_labels``).
    right_col : str
        APOGEE_ID column of ``labels``.
    member_kw : dict, optional
        Keywords of :func:`mdslam.selection.occam_member_cuts` (default: RV and PM
        probability > 0.01, Cantat-Gaudin probability > 0.5, no [Fe/H] cut).
    cluster_feh : dict, optional
        ``{cluster name: cluster [Fe/H]}`` (e.g. the OCCAM DR16 cluster table);
        names match whatever their spaces and underscores.
    logg_col : str or None
        Surface gravity column [dex] of the joined table for the per-star
        pre-main-sequence test (None: cluster ages only).
    logg_pms_max : float
        A star with ``log g < logg_pms_max`` [dex] is marked pre-main-sequence:
        main-sequence M dwarfs of 0.6-0.1 Msun (R ~ 0.6-0.12 Rsun) have log g of ~4.65-5.3.
    young_clusters : set of str
        Clusters whose M dwarfs are all marked pre-main-sequence.
    table_names : (str, str)
        Suffixes for clashing column names of the join.

    Returns
    -------
    Table
        The joined row of each star (sorted by cluster, then APOGEE_ID) plus
        ``cluster`` (cleaned name), ``n_listed`` and ``clusters_listed`` (OCCAM
        rows of the star), ``member`` (the kept row passes the membership cuts),
        ``young_cluster``, ``low_logg``, ``pms`` (either) and ``cluster_fe_h``
        (NaN where the cluster is not in ``cluster_feh``). ``meta["N_ROWS"]`` is
        the number of joined rows before de-duplication.
    """
    from mdslam import selection

    member_kw = dict(rv_min=0.01, feh_min=None, pm_min=0.01, cg_min=0.5) if member_kw is None else member_kw
    ox = match_apogee_id(occam, labels, right_col=right_col, table_names=table_names)
    n_rows = len(ox)
    key = normalize_apogee_id(ox["APOGEE_ID"])
    member = selection.occam_members(ox, **member_kw) if n_rows else np.zeros(0, bool)
    keep = _best_row_per_star(ox, key, member)
    names = _cluster_name(ox["CLUSTER"]) if n_rows else np.zeros(0, str)
    listed = {}
    for k, c in zip(key.tolist(), names.tolist(), strict=True):
        listed.setdefault(k, []).append(c)
    out = ox[keep]
    out["cluster"] = names[keep]
    out["n_listed"] = np.array([len(listed[k]) for k in key[keep]], int)
    out["clusters_listed"] = np.array(["; ".join(sorted(set(listed[k]))) for k in key[keep]], dtype=str) \
        if len(keep) else np.zeros(0, str)
    out["member"] = member[keep]
    _mark_pms(out, young_clusters, logg_col, logg_pms_max)
    lit = {" ".join(str(k).replace("_", " ").split()).upper(): float(v) for k, v in (cluster_feh or {}).items()}
    out["cluster_fe_h"] = np.array([lit.get(c.upper(), np.nan) for c in out["cluster"]], float)
    out["cluster_fe_h"].unit = "dex"
    srt = np.lexsort((normalize_apogee_id(out["APOGEE_ID"]), np.asarray(out["cluster"])))
    out = out[srt]
    out.meta["N_ROWS"] = n_rows
    return out


def occam_comparison(stars: Table, value_col: str, ref_col: str, select: np.ndarray | None = None,
                     cluster_col: str = "cluster") -> tuple[Table, dict]:
    """L21 Table 3 statistics of a selection of :func:`occam_stars` rows.

    Parameters
    ----------
    stars : Table
        One row per star (:func:`occam_stars`).
    value_col : str
        This work's metallicity [dex] (e.g. SLAM ``fe_h``).
    ref_col : str
        The reference [dex] (e.g. OCCAM ``FE_H`` of the same star, or ``cluster_fe_h``).
    select : (n,) bool, optional
        Rows to use (default all).
    cluster_col : str

    Returns
    -------
    (Table, dict)
        Per cluster (:func:`mdslam.validation.cluster_statistics`: ``n``, mean and
        std of both, of the difference), and the overall difference ``value - ref``:
        ``n``, ``n_clusters``, ``mean``, ``std``, ``median`` (std NaN for n < 2).
    """
    from mdslam import validation

    sel = np.ones(len(stars), bool) if select is None else np.asarray(select, bool)
    t = stars[sel]
    v = np.asarray(column(t, value_col), float)
    r = np.asarray(column(t, ref_col), float)
    per = validation.cluster_statistics(np.asarray(t[cluster_col]).astype(str), v, r)
    d = (v - r)[np.isfinite(v - r)]
    summary = dict(n=int(d.size), n_clusters=len(per),
                   mean=float(np.mean(d)) if d.size else np.nan,
                   std=float(np.std(d)) if d.size > 1 else np.nan,
                   median=float(np.median(d)) if d.size else np.nan)
    return per, summary


# --------------------------------------------------------------------------- #
# our labels against a published catalogue (L21 Figs. 3-4 and Table 4)
# --------------------------------------------------------------------------- #
def compare_catalogues(ours: Table, theirs: Table, pairs: dict[str, str], *,
                       key: tuple[str, str] | None = None,
                       sky: tuple[str, str, str, str] | None = None, radius_arcsec: float = 3.0,
                       select: np.ndarray | None = None, reference: str = "") -> tuple[Table, Table]:
    """Offset and scatter of ``ours - theirs`` on the stars the two catalogues share.

    Stars are matched either by an identifier (``key``: e.g. LAMOST ``obsid`` in
    both, an exact integer match) or by sky position (``sky``: nearest neighbour
    within ``radius_arcsec``, one-to-one, :func:`match_sky`). The statistics are
    those the papers quote: the offset is the median of the differences, the
    scatter their standard deviation (ddof=0), with the robust 1.4826 MAD beside.

    Parameters
    ----------
    ours, theirs : Table
        Our labels and the published ones (any units, the same for each pair).
    pairs : dict
        ``{our column: their column}``, e.g. ``{"TEFF_BT": "Teff"}``.
    key : (str, str), optional
        Identifier columns (ours, theirs); ids <= 0 or missing never match.
    sky : (ra_ours, dec_ours, ra_theirs, dec_theirs), optional
        Coordinate columns in degrees (used when ``key`` is None).
    radius_arcsec : float
        Largest separation of a sky match.
    select : (len(ours),) bool, optional
        Rows of ``ours`` to use (e.g. unflagged stars); default all.
    reference : str
        Name of the published catalogue, written to the ``reference`` column.

    Returns
    -------
    stats : Table
        One row per pair: ``label``, ``reference``, ``n`` (finite pairs),
        ``offset`` (median), ``mean``, ``scatter`` (std), ``robust_scatter``;
        NaN statistics when no star is shared.
    matched : Table
        The matched rows side by side (suffixes ``_ours``/``_theirs`` on clashing
        names), with ``sep_arcsec`` for sky matches.

    Raises
    ------
    ValueError
        If neither ``key`` nor ``sky`` is given, or a column of ``pairs`` is missing.
    """
    from .validation import compare

    for a, b in pairs.items():
        if a not in ours.colnames or b not in theirs.colnames:
            raise ValueError(f"compare_catalogues: column {a!r} (ours) or {b!r} ({reference or 'theirs'}) missing")
    left = ours if select is None else ours[np.asarray(select, bool)]
    names = ("ours", "theirs")
    if key is not None:
        lk, rk = (np.where(ids > 0, ids, -1) for ids in (normalize_gaia_id(left[key[0]]),
                                                          normalize_gaia_id(theirs[key[1]])))
        il, ir = match_keys(lk, rk, invalid=-1)
        matched = join_rows(left, theirs, il, ir, names)
    elif sky is not None:
        matched = match_sky(left, theirs, radius_arcsec, left_ra=sky[0], left_dec=sky[1], right_ra=sky[2],
                            right_dec=sky[3], table_names=names)
    else:
        raise ValueError("compare_catalogues: give key=(ours, theirs) or sky=(ra, dec, ra, dec)")
    rows = []
    for a, b in pairs.items():
        ca = a if a in matched.colnames else f"{a}_ours"
        cb = b if b in matched.colnames else f"{b}_theirs"
        c = compare(column(matched, ca), column(matched, cb))
        rows.append((a, reference or b, c.n, c.median, c.mean, c.std, c.robust_std))
    stats = Table(rows=rows, names=("label", "reference", "n", "offset", "mean", "scatter", "robust_scatter"),
                  dtype=(str, str, int, float, float, float, float))
    return stats, matched
