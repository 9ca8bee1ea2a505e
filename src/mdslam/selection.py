"""Sample selection of both papers as boolean masks over astropy Tables, and the cut flow.

Each ``*_cuts`` function returns an ordered ``{cut name: boolean mask}`` dict for one
table (one entry per criterion as printed in the paper), so that
:func:`cut_flow` can count what every criterion removes; the matching
selection function (``li2021_gaia_quality``, ``hyades_members`` ...) is the AND of
those masks. Columns are named by keyword (defaults are the Gaia archive /
APOGEE / El-Badry 2021 names); a name not found is looked up case-insensitively.
Missing values (masked entries, NaN, APOGEE's -9999 sentinels) never pass a cut.

Papers: Li et al. 2021 ("L21", LAMOST M dwarfs) and Qiu et al. 2025 ("Q25",
BOSS M dwarfs). Slips in the printed criteria, and what is implemented:

- L21 sec. 5.1 (Hyades) prints ``0.04 < parallax < 0.05``, which selects nothing
  (Hyades parallax ~ 21 mas). Read as a distance, 0.04 < 1/parallax < 0.05 kpc,
  i.e. 20 < parallax < 25 mas: the default of :func:`hyades_members`.
- Q25 sec. 2.2 attributes criterion 2 (``MG0 < 3.75 (BP-RP)0 + 7.50``) to removing
  pre-main-sequence stars and binaries and criterion 3 (``MG0 > 3.28 (BP-RP)0 + 0.10``)
  to removing white dwarfs. The inequalities do the opposite (criterion 2 bounds
  the faint side, where white dwarfs and WD+MS pairs lie; criterion 3 the bright
  side, where young stars and unresolved binaries lie); the inequalities are
  implemented as printed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table

__all__ = [
    "QIU2025_TOTAL_RANGE",
    "QIU2025_USABLE_RANGE",
    "LI2021_CMD_VERTICES",
    "HYADES_CENTER",
    "column",
    "cut_flow",
    "combine",
    "li2021_gaia_cuts",
    "li2021_gaia_quality",
    "li2021_cmd_polygon",
    "in_li2021_cmd",
    "li2021_cmd_giant_cuts",
    "qiu2025_cmd_cuts",
    "in_qiu2025_cmd",
    "qiu2025_cmd_polygon",
    "li2021_apogee_label_cuts",
    "li2021_apogee_labels",
    "qiu2025_binary_cuts",
    "qiu2025_binaries",
    "qiu2025_aspcap_calibration_cuts",
    "in_qiu2025_domain",
    "hyades_cuts",
    "hyades_members",
    "occam_member_cuts",
    "occam_members",
]

# --------------------------------------------------------------------------- #
# constants
# --------------------------------------------------------------------------- #
#: Q25 Table 1, "total range" of the training labels: label -> (min, max);
#: [Fe/H] and log g in dex, Teff in K.
QIU2025_TOTAL_RANGE: dict[str, tuple[float, float]] = {
    "feh": (-1.0, 0.5), "teff": (2900.0, 4200.0), "logg": (4.4, 5.1),
}
#: Q25 Table 1, "usable range" (SLAM validated and recommended).
QIU2025_USABLE_RANGE: dict[str, tuple[float, float]] = {
    "feh": (-0.6, 0.5), "teff": (3100.0, 3900.0), "logg": (4.45, 4.95),
}
#: L21 Fig. 1 quadrangle vertices in (BP-RP, M_G), as printed.
LI2021_CMD_VERTICES: tuple[tuple[float, float], ...] = ((0.7, 5.0), (1.4, 5.0), (4.0, 16.5), (5.0, 16.5))
#: L21 sec. 5.1 Hyades centre (RA, Dec) in degrees.
HYADES_CENTER: tuple[float, float] = (66.725, 15.867)

_SENTINEL = -9000.0  # APOGEE/OCCAM missing values are -9999 or -9999.99


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _colname(table: Table, name: str) -> str:
    if name in table.colnames:
        return name
    low = {c.lower(): c for c in table.colnames}
    if name.lower() in low:
        return low[name.lower()]
    raise KeyError(f"column {name!r} not in table (columns: {', '.join(table.colnames)})")


def column(table: Table, name: str, sentinel: bool = True) -> np.ndarray:
    """A table column as a float array with missing values as NaN.

    Parameters
    ----------
    table : Table
        Any astropy Table.
    name : str
        Column name; matched exactly first, then case-insensitively.
    sentinel : bool
        Also turn values below -9000 (APOGEE's -9999 and OCCAM's -9999.99) into NaN.

    Returns
    -------
    ndarray, shape (len(table),)
    """
    col = table[_colname(table, name)]
    arr = np.ma.filled(np.ma.asarray(col, dtype=float), np.nan)
    arr = np.array(arr, dtype=float)
    if sentinel:
        arr[arr < _SENTINEL] = np.nan
    return arr


def _ratio(table: Table, ratio_col: str | None, num_col: str, den_col: str) -> np.ndarray:
    """``table[ratio_col]`` if present, else ``table[num_col] / table[den_col]``."""
    if ratio_col is not None:
        try:
            return column(table, ratio_col)
        except KeyError:
            pass
    with np.errstate(invalid="ignore", divide="ignore"):
        return column(table, num_col) / column(table, den_col)


def _gt(x: np.ndarray, v: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.asarray(x > v)


def _lt(x: np.ndarray, v: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.asarray(x < v)


def _between(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return _gt(x, lo) & _lt(x, hi)


def combine(cuts: Mapping[str, np.ndarray]) -> np.ndarray:
    """Logical AND of all masks in ``cuts`` (a ``{name: mask}`` mapping)."""
    masks = [np.asarray(m, bool) for m in cuts.values()]
    if not masks:
        raise ValueError("no cuts given")
    return np.logical_and.reduce(masks)


def cut_flow(table: Table,
             cuts: Mapping[str, np.ndarray | Callable[[Table], np.ndarray]]
             | Sequence[tuple[str, np.ndarray | Callable[[Table], np.ndarray]]]) -> Table:
    """Counts kept and removed by each cut, applied in order.

    Parameters
    ----------
    table : Table
        The input sample (n rows).
    cuts : mapping or sequence of (name, mask-or-callable)
        Ordered cuts; each is a boolean array of length n or a callable
        ``f(table) -> mask``. The output of any ``*_cuts`` function fits here.

    Returns
    -------
    Table
        One row for the input ("input") and one per cut, columns ``cut``,
        ``n_pass_alone`` (rows passing that cut on its own), ``n_removed`` (removed
        by it after the previous cuts), ``n_kept`` (left after it) and ``frac_kept``
        (``n_kept / n``).
    """
    items = list(cuts.items()) if isinstance(cuts, Mapping) else list(cuts)
    n = len(table)
    keep = np.ones(n, bool)
    rows = [("input", n, 0, n, 1.0)]
    for name, cut in items:
        mask = np.asarray(cut(table) if callable(cut) else cut, bool)
        if mask.shape != (n,):
            raise ValueError(f"cut {name!r} has shape {mask.shape}, expected ({n},)")
        new = keep & mask
        rows.append((str(name), int(mask.sum()), int(keep.sum() - new.sum()), int(new.sum()),
                     float(new.sum()) / n if n else np.nan))
        keep = new
    return Table(rows=rows, names=("cut", "n_pass_alone", "n_removed", "n_kept", "frac_kept"))


# --------------------------------------------------------------------------- #
# L21 sec. 3.1: Gaia and LAMOST quality
# --------------------------------------------------------------------------- #
def li2021_gaia_cuts(table: Table, *, parallax: str = "parallax",
                     parallax_error: str = "parallax_error",
                     parallax_over_error: str | None = "parallax_over_error",
                     flux_over_error: Mapping[str, str] | None = None,
                     ruwe: str | None = "ruwe", snr: str | None = "snri",
                     min_parallax_over_error: float = 5.0, min_flux_over_error: float = 20.0,
                     max_ruwe: float = 1.4, min_snr: float = 5.0) -> dict[str, np.ndarray]:
    """L21 sec. 3.1 criteria 1-4, one mask each.

    1. ``parallax / parallax_error > 5``;
    2. ``phot_{g,bp,rp}_mean_flux / error > 20`` (one mask per band);
    3. ``ruwe < 1.4``;
    4. LAMOST i-band SNR ``snri > 5``.

    Parameters
    ----------
    table : Table
        Gaia DR2 x LAMOST rows.
    parallax, parallax_error : str
        Columns (mas) used when ``parallax_over_error`` is absent.
    parallax_over_error : str or None
        Precomputed ratio column, used when present.
    flux_over_error : mapping, optional
        ``band -> column`` of flux-over-error ratios; default
        ``phot_{g,bp,rp}_mean_flux_over_error``; when a ratio column is missing
        it is computed from ``phot_X_mean_flux`` / ``phot_X_mean_flux_error``.
    ruwe : str or None
        RUWE column; ``None`` skips criterion 3 (Gaia DR2 main-table queries lack it).
    snr : str or None
        LAMOST SNR column; ``None`` skips criterion 4 (e.g. for non-LAMOST tables).
    min_parallax_over_error, min_flux_over_error, max_ruwe, min_snr : float
        Thresholds (defaults as printed).

    Returns
    -------
    dict
        Ordered ``{name: mask}``.
    """
    bands = flux_over_error or {b: f"phot_{b}_mean_flux_over_error" for b in ("g", "bp", "rp")}
    cuts = {f"parallax_over_error > {min_parallax_over_error:g}": _gt(
        _ratio(table, parallax_over_error, parallax, parallax_error), min_parallax_over_error)}
    for band, col in bands.items():
        r = _ratio(table, col, f"phot_{band}_mean_flux", f"phot_{band}_mean_flux_error")
        cuts[f"{band}_flux_over_error > {min_flux_over_error:g}"] = _gt(r, min_flux_over_error)
    if ruwe is not None:
        cuts[f"ruwe < {max_ruwe:g}"] = _lt(column(table, ruwe), max_ruwe)
    if snr is not None:
        cuts[f"{snr} > {min_snr:g}"] = _gt(column(table, snr), min_snr)
    return cuts


def li2021_gaia_quality(table: Table, **kwargs) -> np.ndarray:
    """AND of :func:`li2021_gaia_cuts` (same keywords)."""
    return combine(li2021_gaia_cuts(table, **kwargs))


# --------------------------------------------------------------------------- #
# CMD regions
# --------------------------------------------------------------------------- #
def li2021_cmd_polygon() -> np.ndarray:
    """L21 Fig. 1 quadrangle as a closed polygon in (BP-RP, M_G), shape (4, 2).

    The printed vertices are [(0.7, 5), (1.4, 5), (4, 16.5), (5, 16.5)]; the
    region is bounded by M_G = 5 (dotted line, giants removed), the dashed line
    through (1.4, 5)-(5, 16.5) on the bright side (pre-main-sequence stars and
    binaries above it) and the dashed line through (0.7, 5)-(4, 16.5) on the
    faint side (WD+MS pairs below it), closed at M_G = 16.5. Returned in
    polygon order (0.7, 5), (1.4, 5), (5, 16.5), (4, 16.5).
    """
    (x1, y1), (x2, y2), (x3, y3), (x4, y4) = LI2021_CMD_VERTICES
    return np.array([[x1, y1], [x2, y2], [x4, y4], [x3, y3]], dtype=float)


def in_li2021_cmd(bp_rp: np.ndarray, mg: np.ndarray) -> np.ndarray:
    """Inside the L21 Fig. 1 quadrangle (boundaries included).

    Inside means ``5 <= M_G <= 16.5`` and, at colour ``X = BP-RP``,
    ``5 + 11.5/3.6 (X - 1.4) <= M_G <= 5 + 11.5/3.3 (X - 0.7)``.
    Whether ``mg`` is extinction corrected is the caller's choice (L21 applies
    ``M_G + A_G <= 5`` as the giant cut).

    Parameters
    ----------
    bp_rp : array_like
        BP - RP colour in mag.
    mg : array_like
        Absolute G magnitude in mag.

    Returns
    -------
    ndarray of bool
    """
    x = np.asarray(bp_rp, float)
    y = np.asarray(mg, float)
    (xa, ya), (xb, yb), (xc, yc), (xd, yd) = LI2021_CMD_VERTICES
    faint_edge = ya + (yc - ya) / (xc - xa) * (x - xa)   # (0.7, 5)-(4, 16.5)
    bright_edge = yb + (yd - yb) / (xd - xb) * (x - xb)  # (1.4, 5)-(5, 16.5)
    with np.errstate(invalid="ignore"):
        return (y >= ya) & (y <= yc) & (y >= bright_edge) & (y <= faint_edge)


def li2021_cmd_giant_cuts(bp_rp: np.ndarray, mg: np.ndarray, a_g: np.ndarray | float = 0.0
                          ) -> dict[str, np.ndarray]:
    """L21 sec. 3.1 / Fig. 1 CMD criteria as cumulative masks, for counting contaminants.

    Applied to known M giants (Zhong et al. 2019, as L21 draw them on Fig. 1),
    the last mask marks the giants the M dwarf selection would keep.

    Parameters
    ----------
    bp_rp : array_like, shape (n,)
        Gaia BP - RP colour in mag.
    mg : array_like, shape (n,)
        Absolute G magnitude ``G + 5 log10(parallax/100 mas)`` in mag (not
        extinction corrected).
    a_g : array_like or float
        G-band extinction in mag (L21 cut on ``M_G + A_G``; 0 when not known).

    Returns
    -------
    dict of str -> ndarray of bool, shape (n,)
        Cumulative (each mask includes the ones before): ``"finite colour and
        M_G"``, ``"M_G + A_G > 5 (giants removed)"``, ``"inside the Fig. 1
        quadrangle"`` (:func:`in_li2021_cmd` on ``M_G + A_G``).
    """
    x = np.asarray(bp_rp, float)
    y = np.asarray(mg, float) + np.asarray(a_g, float)
    finite = np.isfinite(x) & np.isfinite(y)
    faint = finite & _gt(y, LI2021_CMD_VERTICES[0][1])
    return {"finite colour and M_G": finite,
            "M_G + A_G > 5 (giants removed)": faint,
            "inside the Fig. 1 quadrangle": faint & in_li2021_cmd(x, y)}


def qiu2025_cmd_cuts(table: Table, *, mg0: str = "MG0", bp_rp0: str = "BP_RP0",
                     ruwe: str | None = "ruwe") -> dict[str, np.ndarray]:
    """Q25 sec. 2.2 criteria 1-4 on de-reddened photometry, one mask each.

    1. ``MG0 > 6``; 2. ``MG0 < 3.75 (BP-RP)0 + 7.50``; 3. ``MG0 > 3.28 (BP-RP)0 + 0.10``;
    4. ``ruwe < 1.4`` (skipped when ``ruwe`` is None).

    ``MG0 = G + 5 log10(parallax/mas) - 10 - A_G`` and ``(BP-RP)0`` are built with
    :func:`mdslam.relations.absolute_magnitude` and :func:`mdslam.relations.gaia_extinction`.
    """
    x = column(table, bp_rp0)
    y = column(table, mg0)
    cuts = {"MG0 > 6": _gt(y, 6.0),
            "MG0 < 3.75 BP_RP0 + 7.50": _lt(y - (3.75 * x + 7.50), 0.0),
            "MG0 > 3.28 BP_RP0 + 0.10": _gt(y - (3.28 * x + 0.10), 0.0)}
    if ruwe is not None:
        cuts["ruwe < 1.4"] = _lt(column(table, ruwe), 1.4)
    return cuts


def in_qiu2025_cmd(bp_rp0: np.ndarray, mg0: np.ndarray, ruwe: np.ndarray | None = None) -> np.ndarray:
    """Q25 sec. 2.2 criteria 1-3 (and 4 when ``ruwe`` is given) on arrays (mag)."""
    t = Table({"BP_RP0": np.asarray(bp_rp0, float), "MG0": np.asarray(mg0, float)})
    if ruwe is not None:
        t["ruwe"] = np.asarray(ruwe, float)
    return combine(qiu2025_cmd_cuts(t, ruwe="ruwe" if ruwe is not None else None))


def qiu2025_cmd_polygon(bp_rp_max: float = 5.0) -> np.ndarray:
    """The Q25 criteria 1-3 region as a closed polygon in ((BP-RP)0, MG0), shape (4, 2).

    Corners: (-0.4, 6) where ``MG0 = 6`` meets ``3.75 X + 7.5``; (5.9/3.28, 6) where it
    meets ``3.28 X + 0.1``; then both lines at ``X = bp_rp_max`` (the region is
    open to the red; the cut-off is only for drawing).
    """
    x0 = (6.0 - 7.50) / 3.75
    x1 = (6.0 - 0.10) / 3.28
    xm = float(bp_rp_max)
    return np.array([[x0, 6.0], [x1, 6.0], [xm, 3.28 * xm + 0.10], [xm, 3.75 * xm + 7.50]])


# --------------------------------------------------------------------------- #
# L21 sec. 3.2: APOGEE training labels
# --------------------------------------------------------------------------- #
def li2021_apogee_label_cuts(table: Table, *, teff: str = "TEFF", teff_err: str = "TEFF_ERR",
                             m_h: str = "M_H", m_h_err: str = "M_H_ERR",
                             logg: str = "LOGG") -> dict[str, np.ndarray]:
    """L21 sec. 3.2 criteria 1-5 on APOGEE labels, one mask each.

    ``2800 < Teff < 4500 K``; ``Teff_err < 100 K``; ``-2 < [M/H] < 0.5``;
    ``[M/H]_err < 0.1 dex``; ``log g > 4``. -9999 entries fail.
    """
    return {
        "2800 < Teff < 4500": _between(column(table, teff), 2800.0, 4500.0),
        "Teff_err < 100": _lt(column(table, teff_err), 100.0),
        "-2 < [M/H] < 0.5": _between(column(table, m_h), -2.0, 0.5),
        "[M/H]_err < 0.1": _lt(column(table, m_h_err), 0.1),
        "logg > 4": _gt(column(table, logg), 4.0),
    }


def li2021_apogee_labels(table: Table, **kwargs) -> np.ndarray:
    """AND of :func:`li2021_apogee_label_cuts` (same keywords)."""
    return combine(li2021_apogee_label_cuts(table, **kwargs))


# --------------------------------------------------------------------------- #
# Q25 sec. 2.3 and 5: wide binaries and ASPCAP comparison sample
# --------------------------------------------------------------------------- #
def qiu2025_binary_cuts(table: Table, *, feh_err: str = "feh_err",
                        r_chance_align: str = "R_chance_align", ruwe1: str = "ruwe1",
                        ruwe2: str = "ruwe2") -> dict[str, np.ndarray]:
    """Q25 sec. 2.3 quality cuts on FGK+M pairs (El-Badry et al. 2021 column names).

    1) ``[Fe/H]_FGK,err < 0.2``; 2) ``R_chance_align < 0.1``; 3) ``ruwe1 < 1.4`` and
    ``ruwe2 < 1.4``. Pass ``feh_err=None`` for M+M pairs (Q25 uses cuts 2-3 only).
    """
    cuts = {}
    if feh_err is not None:
        cuts["[Fe/H]_FGK_err < 0.2"] = _lt(column(table, feh_err), 0.2)
    cuts["R_chance_align < 0.1"] = _lt(column(table, r_chance_align), 0.1)
    cuts["ruwe1 < 1.4"] = _lt(column(table, ruwe1), 1.4)
    cuts["ruwe2 < 1.4"] = _lt(column(table, ruwe2), 1.4)
    return cuts


def qiu2025_binaries(table: Table, **kwargs) -> np.ndarray:
    """AND of :func:`qiu2025_binary_cuts` (same keywords)."""
    return combine(qiu2025_binary_cuts(table, **kwargs))


def qiu2025_aspcap_calibration_cuts(table: Table, *, snr_apogee: str = "snr",
                                    snr_boss: str | None = "snr_boss",
                                    feh_slam: str | None = "feh_slam") -> dict[str, np.ndarray]:
    """Q25 sec. 5 sample for the ASPCAP comparison: APOGEE SNR > 20, BOSS SNR > 10,
    [Fe/H]_SLAM > -0.6. Pass None for a column the track does not have."""
    cuts = {"SNR_APOGEE > 20": _gt(column(table, snr_apogee), 20.0)}
    if snr_boss is not None:
        cuts["SNR_BOSS > 10"] = _gt(column(table, snr_boss), 10.0)
    if feh_slam is not None:
        cuts["[Fe/H]_SLAM > -0.6"] = _gt(column(table, feh_slam), -0.6)
    return cuts


def in_qiu2025_domain(teff: np.ndarray | None = None, logg: np.ndarray | None = None,
                      feh: np.ndarray | None = None, usable: bool = True) -> np.ndarray:
    """Inside the Q25 Table 1 label domain (closed intervals) for the labels given.

    Parameters
    ----------
    teff, logg, feh : array_like, optional
        Labels in K, dex, dex; omitted labels are not tested.
    usable : bool
        Test the "usable range" (default) or the "total range" of Table 1.

    Returns
    -------
    ndarray of bool
    """
    ranges = QIU2025_USABLE_RANGE if usable else QIU2025_TOTAL_RANGE
    given = {k: v for k, v in (("teff", teff), ("logg", logg), ("feh", feh)) if v is not None}
    if not given:
        raise ValueError("give at least one of teff, logg, feh")
    masks = []
    for key, val in given.items():
        lo, hi = ranges[key]
        v = np.asarray(val, float)
        with np.errstate(invalid="ignore"):
            masks.append((v >= lo) & (v <= hi))
    return np.logical_and.reduce(np.broadcast_arrays(*masks))


# --------------------------------------------------------------------------- #
# L21 sec. 5.1: Hyades
# --------------------------------------------------------------------------- #
def hyades_cuts(table: Table, *, distance_reading: bool = True, ra: str = "ra", dec: str = "dec",
                parallax: str = "parallax", pmra: str = "pmra", pmdec: str = "pmdec",
                center: tuple[float, float] = HYADES_CENTER,
                radius_deg: float = 5.0) -> dict[str, np.ndarray]:
    """L21 sec. 5.1 Hyades criteria, one mask each.

    1. within ``radius_deg`` = 5 deg of (RA, Dec) = (66.725, 15.867) deg;
    2. ``4 < pmra / parallax < 6`` (pm in mas/yr, parallax in mas, i.e. a
       tangential velocity ~ 4.74 * ratio km/s);
    3. ``-2.5 < pmdec / parallax < 0``;
    4. the distance cut: with ``distance_reading=True`` (default) the printed
       "0.04 < parallax < 0.05" is read as 0.04 < d < 0.05 kpc, i.e.
       ``20 < parallax < 25`` mas; with ``False`` it is applied literally to the
       parallax column in mas, which selects no Hyades star (parallax ~ 21 mas).
    """
    ra_v, dec_v = column(table, ra), column(table, dec)
    plx = column(table, parallax)
    ok = np.isfinite(ra_v) & np.isfinite(dec_v)
    sep = np.full(len(table), np.nan)
    if ok.any():
        c = SkyCoord(ra_v[ok], dec_v[ok], unit="deg")
        sep[ok] = c.separation(SkyCoord(center[0], center[1], unit="deg")).deg
    with np.errstate(invalid="ignore", divide="ignore"):
        rx = column(table, pmra) / plx
        ry = column(table, pmdec) / plx
    cuts = {f"within {radius_deg:g} deg": _lt(sep, radius_deg),
            "4 < pmra/parallax < 6": _between(rx, 4.0, 6.0),
            "-2.5 < pmdec/parallax < 0": _between(ry, -2.5, 0.0)}
    if distance_reading:
        cuts["0.04 < 1/parallax < 0.05 kpc (20 < plx < 25 mas)"] = _between(plx, 20.0, 25.0)
    else:
        cuts["0.04 < parallax < 0.05 (literal)"] = _between(plx, 0.04, 0.05)
    return cuts


def hyades_members(table: Table, distance_reading: bool = True, **kwargs) -> np.ndarray:
    """Hyades members by the L21 sec. 5.1 criteria (AND of :func:`hyades_cuts`).

    ``distance_reading=True`` (default) uses 20 < parallax < 25 mas; ``False`` the
    literal 0.04 < parallax < 0.05. Other keywords (column names, centre, radius)
    go to :func:`hyades_cuts`.
    """
    return combine(hyades_cuts(table, distance_reading=distance_reading, **kwargs))


# --------------------------------------------------------------------------- #
# OCCAM membership
# --------------------------------------------------------------------------- #
def occam_member_cuts(table: Table, *, rv_min: float | None = 0.01, feh_min: float | None = 0.01,
                      pm_min: float | None = 0.01, cg_min: float | None = None,
                      rv_prob: str = "RV_PROB", feh_prob: str = "FEH_PROB",
                      pm_prob: str = "PM_PROB", cg_prob: str = "CG_PROB") -> dict[str, np.ndarray]:
    """OCCAM membership-probability cuts (Donor et al. 2020, DR16; Myers et al. 2022, DR17).

    Defaults follow OCCAM's own member definition (RV, [Fe/H] and PM probabilities
    each > 0.01); ``cg_min`` adds the Cantat-Gaudin et al. 2018 astrometric
    probability (e.g. 0.5 or 0.7). A threshold of ``None`` drops that cut. Each
    cut is ``column > threshold`` as printed; what the flag values do under it:

    * CG_PROB = -9999.99 (star not in Cantat-Gaudin) and FEH_PROB = -1 (no usable
      ASPCAP [Fe/H]) fail;
    * DR16 PM_PROB runs from -1 to 1 plus 257 rows at exactly 2. The negative
      values behave like probabilities with a flag sign (their proper motions lie
      close to the cluster mean) and fail, as a plain ``> 0.01`` cut makes them;
      the PM_PROB = 2 rows (PMs within 0.3 mas/yr of the cluster mean, CG_PROB
      median 1.0) pass.

    Note for M dwarfs: FEH_PROB compares the star's ASPCAP [Fe/H] with the
    cluster mean; ASPCAP under-estimates M dwarf [Fe/H], so the FEH_PROB cut
    removes most M dwarf members and keeps those whose ASPCAP [Fe/H] happens to
    agree (biasing any metallicity test). For M dwarf work use ``feh_min=None``
    (e.g. ``rv_min=0.01, pm_min=0.01, cg_min=0.5``: 174 of the 951 B20 x OCCAM
    DR16 rows).

    Returns
    -------
    dict
        Ordered ``{name: mask}``.
    """
    cuts = {}
    for name, col, thr in (("RV_PROB", rv_prob, rv_min), ("FEH_PROB", feh_prob, feh_min),
                           ("PM_PROB", pm_prob, pm_min), ("CG_PROB", cg_prob, cg_min)):
        if thr is None:
            continue
        cuts[f"{name} > {thr:g}"] = _gt(column(table, col), thr)
    if not cuts:
        raise ValueError("all thresholds are None: no cut to apply")
    return cuts


def occam_members(table: Table, **kwargs) -> np.ndarray:
    """AND of :func:`occam_member_cuts` (same keywords)."""
    return combine(occam_member_cuts(table, **kwargs))
