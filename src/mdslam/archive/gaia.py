"""The Gaia archive through astroquery (``GaiaClass``/``TapPlus``): ADQL, cones, id lists, XP.

Every query is an ADQL text; its result is cached under
``<cache>/archive/gaia/<sha of the ADQL>.fits`` with the ADQL beside it in a
``.json`` record, so a rerun sends nothing. Lists of ``source_id`` are cut into
chunks of at most ``chunk_size`` ids, one ADQL query (and one cache entry) per
chunk: an interrupted run resumes at the first unfinished chunk.

Queries with ``TOP n <= 2000`` run synchronously, anything else as an
asynchronous (UWS) job; astroquery's synchronous path would otherwise add
``TOP 2000`` to an unbounded query and silently cut it.

The quality columns of the papers' cuts differ by release: Gaia DR2 keeps
RUWE in a separate table (``gaiadr2.ruwe``, joined here on ``source_id``),
DR3 has it in ``gaia_source``.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import re
import sys
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from ._core import (
    ArchiveError,
    CacheEntry,
    Settings,
    _Permanent,
    _quiet_astropy,
    query_key,
    service_url,
    settings,
    with_retries,
)

__all__ = [
    "GAIA_SCHEMAS",
    "DEFAULT_COLUMNS",
    "HYADES_CENTRE",
    "gaia_query",
    "gaia_by_source_id",
    "gaia_cone",
    "hyades_cone",
    "gaia_dr2_dr3_neighbourhood",
    "best_dr3_neighbour",
    "gaia_dr3_ids_from_dr2",
    "gaia_xp_sampled",
]

#: Release name -> ADQL schema of the archive.
GAIA_SCHEMAS = {"dr2": "gaiadr2", "edr3": "gaiaedr3", "dr3": "gaiadr3"}

#: Astrometry, photometry and the quality columns of both papers' cuts
#: (parallax_over_error > 5, flux_over_error cuts, RUWE < 1.4).
DEFAULT_COLUMNS = (
    "source_id", "ra", "dec", "parallax", "parallax_error", "parallax_over_error",
    "pmra", "pmra_error", "pmdec", "pmdec_error",
    "phot_g_mean_mag", "phot_bp_mean_mag", "phot_rp_mean_mag", "bp_rp",
    "phot_g_mean_flux_over_error", "phot_bp_mean_flux_over_error", "phot_rp_mean_flux_over_error",
    "phot_bp_rp_excess_factor", "radial_velocity", "ruwe",
)

#: Li et al. (2021) sec. 5.1: the Hyades cone centre (ICRS, deg) and radius (deg).
HYADES_CENTRE = (66.725, 15.867)
HYADES_RADIUS = 5.0

_SYNC_MAX_ROWS = 2000
_TOP_RE = re.compile(r"^\s*SELECT\s+(?:ALL\s+|DISTINCT\s+)?TOP\s+(\d+)", re.IGNORECASE)


# --------------------------------------------------------------------------- #
# the astroquery client, with a timeout on every connection
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class _Where:
    https: bool
    host: str
    port: int
    server_context: str
    context: str


def _split(url: str) -> _Where:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise ValueError(f"Gaia service URL {url!r} needs a path such as /tap-server/tap")
    return _Where(https, parts.hostname or "", parts.port or (443 if https else 80),
                  "/".join(segments[:-1]), segments[-1])


def _connection(where: _Where, net: Settings, *, tap: str, data: str):
    """An astroquery ``TapConn`` whose connections time out after ``net.timeout`` seconds.

    astroquery's TAP layer opens ``http.client`` connections without a timeout;
    it accepts a ready-made connection object (the hook its own tests use), so
    one that sets a timeout is passed in and a stalled server cannot hang a run.
    """
    from astroquery.utils.tap.conn.tapconn import ConnectionHandler, TapConn

    class _TimeoutHandler(ConnectionHandler):
        def __init__(self) -> None:
            super().__init__(where.host, where.port, where.port)

        def get_connection(self, *, ishttps=False, cookie=None, verbose=False):
            if ishttps or cookie is not None:
                return self.get_connection_secure(verbose)
            return http.client.HTTPConnection(where.host, where.port, timeout=net.timeout)

        def get_connection_secure(self, verbose):
            return http.client.HTTPSConnection(where.host, where.port, timeout=net.timeout)

    return TapConn(ishttps=where.https, host=where.host, server_context=where.server_context,
                   port=where.port, sslport=where.port, connhandler=_TimeoutHandler(),
                   tap_context=tap, upload_context="Upload", table_edit_context="TableTool",
                   data_context=data, datalink_context="datalink")


def _datalink(net: Settings):
    """A ``TapPlus`` on the Gaia data server (DataLink products)."""
    from astroquery.utils.tap.core import TapPlus

    url = service_url("gaia_data")
    where = _split(url)
    return TapPlus(url=url, connhandler=_connection(where, net, tap="tap", data=where.context),
                   use_names_over_ids=True)


def _gaia_class():
    """``astroquery.gaia.GaiaClass``, imported without its import-time network call.

    Importing ``astroquery.gaia`` builds a module-level ``Gaia = GaiaClass()``,
    which asks the ESA server for status messages: a connection to the
    internet (and, offline, a wait for DNS) before any query. That one request
    is refused locally during the import.
    """
    if "astroquery.gaia" not in sys.modules:
        from astroquery.utils.tap.conn import tapconn

        real = tapconn.TapConn.execute_tapget

        def no_status(self, subcontext, *args, **kwargs):
            if str(subcontext).startswith("notification"):
                raise OSError("status messages are not fetched by mdslam")
            return real(self, subcontext, *args, **kwargs)

        tapconn.TapConn.execute_tapget = no_status
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                import astroquery.gaia  # noqa: F401
        finally:
            tapconn.TapConn.execute_tapget = real
    from astroquery.gaia import GaiaClass

    return GaiaClass


def _client(net: Settings):
    """A ``GaiaClass`` on the configured TAP and data servers, with connection timeouts."""
    GaiaClass = _gaia_class()
    url = service_url("gaia_tap")
    where = _split(url)
    return GaiaClass(tap_plus_conn_handler=_connection(where, net, tap=where.context, data="data"),
                     datalink_handler=_datalink(net), gaia_tap_server=url,
                     gaia_data_server=service_url("gaia_data"), show_server_messages=False)


# --------------------------------------------------------------------------- #
# ADQL
# --------------------------------------------------------------------------- #
def _normalise(adql: str) -> str:
    return " ".join(adql.split())


def _read_table(path: Path, adql: str):
    from astropy.table import Table

    tab = Table.read(path, format="fits")
    tab.meta = {"service": "gaia", "query": adql, "cache": str(path)}
    return tab


def _fits_safe(tab):
    """A copy of an astroquery result that FITS can hold (no object columns, no VOTable meta)."""
    from astropy.table import MaskedColumn, Table

    out = Table(tab, copy=True)
    out.meta = {}
    for name in out.colnames:
        col = out[name]
        if col.dtype.kind == "O":
            values = ["" if v is None or v is np.ma.masked else str(v) for v in col]
            mask = getattr(col, "mask", None)
            out[name] = MaskedColumn(values, mask=mask) if mask is not None else values
    return out


def gaia_query(
    adql: str, *, async_job: bool | None = None, timeout: float | None = None,
    retries: int | None = None,
):
    """Run one ADQL query on the Gaia archive (cached: a rerun sends nothing).

    Parameters
    ----------
    adql : str
        The query, e.g. ``"SELECT TOP 10 source_id, ra, dec FROM gaiadr3.gaia_source"``.
    async_job : bool, optional
        Force an asynchronous (True) or synchronous (False) job. Default: sync
        when the query says ``TOP n`` with ``n <= 2000``, async otherwise.
    timeout : float, optional
        Seconds without an answer before a connection is abandoned (default:
        ``MDSLAM_ARCHIVE_TIMEOUT`` or 120).
    retries : int, optional
        Attempts in all (default: ``MDSLAM_ARCHIVE_RETRIES`` or 4); timeouts,
        connection failures, HTTP 5xx and truncated replies are retried with
        exponential backoff, query errors are not.

    Returns
    -------
    astropy.table.Table
        The archive's columns with their units; ``meta['query']`` holds the ADQL,
        ``meta['cache']`` the cached FITS file.

    Raises
    ------
    ArchiveError
        The archive's error message (e.g. an ADQL syntax error) and the query.
    ArchiveUnavailableError
        Offline and not cached: says where to place the result.
    """
    net = settings(timeout, retries)
    text = _normalise(adql)
    entry = CacheEntry(f"gaia/{query_key('gaia', text)}.fits", "gaia", text)
    found = entry.find()
    if found is not None:
        return _read_table(found, text)
    if net.offline:
        raise entry.unavailable("the Gaia query result")
    if async_job is None:
        m = _TOP_RE.match(text)
        async_job = not (m and int(m.group(1)) <= _SYNC_MAX_ROWS)

    def attempt():
        gaia = _client(net)
        # astroquery prints its errors as well as raising them: keep only the exception
        with _quiet_astropy(), contextlib.redirect_stdout(io.StringIO()):
            if async_job:
                job = gaia.launch_job_async(text, output_format="votable_gzip")
            else:
                job = gaia.launch_job(text, output_format="votable_gzip")
            tab = job.get_results()
        if tab is None:
            raise _Permanent(f"the archive returned no result table (job phase {job.get_phase()})")
        return tab

    tab = with_retries(attempt, service="gaia", query=text, what="ADQL query", net=net, hint=entry.hint())
    entry.path.parent.mkdir(parents=True, exist_ok=True)
    _fits_safe(tab).write(entry.part, format="fits", overwrite=True)
    path = entry.commit(entry.part, rows=len(tab), mode="async" if async_job else "sync",
                        url=service_url("gaia_tap"))
    return _read_table(path, text)


def _schema(release: str) -> str:
    try:
        return GAIA_SCHEMAS[release.lower()]
    except KeyError:
        raise ValueError(f"unknown Gaia release {release!r}; known: {', '.join(GAIA_SCHEMAS)}") from None


def _select_from(columns: Sequence[str], release: str) -> tuple[str, str]:
    """The SELECT list and FROM clause for ``columns`` of ``release`` (alias ``g``)."""
    schema = _schema(release)
    dr2_ruwe = schema == "gaiadr2" and "ruwe" in columns
    select = []
    for col in columns:
        if dr2_ruwe and col == "ruwe":
            select.append("r.ruwe")
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", col):
            select.append(f"g.{col}")
        else:  # an expression: pass it through
            select.append(col)
    frm = f"{schema}.gaia_source AS g"
    if dr2_ruwe:
        frm += " LEFT OUTER JOIN gaiadr2.ruwe AS r ON r.source_id = g.source_id"
    return ", ".join(select), frm


def _unique_ids(ids: Iterable[int]) -> np.ndarray:
    arr = np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64))
    if arr.size == 0:
        raise ValueError("no source_id given")
    return arr


def _chunked(
    ids: Iterable[int],
    chunk_size: int,
    make_adql: Callable[[np.ndarray], str],
    *,
    desc: str,
    progress: bool,
    timeout: float | None,
    retries: int | None,
):
    """Run ``make_adql(chunk)`` for sorted unique ids in chunks; stack the results.

    Each chunk is its own cached query, so finished chunks are never redone.
    A chunk whose result reaches its ``TOP`` is an error (it may be cut).
    """
    from astropy.table import vstack
    from tqdm.auto import tqdm

    if chunk_size < 1 or chunk_size > _SYNC_MAX_ROWS:
        raise ValueError(f"chunk_size must be 1..{_SYNC_MAX_ROWS}")
    uniq = _unique_ids(ids)
    chunks = [uniq[i:i + chunk_size] for i in range(0, uniq.size, chunk_size)]
    parts = []
    for chunk in tqdm(chunks, desc=desc, unit="chunk", disable=not progress or len(chunks) < 2):
        adql = make_adql(chunk)
        tab = gaia_query(adql, timeout=timeout, retries=retries)
        m = _TOP_RE.match(adql)
        if m and len(tab) >= int(m.group(1)) > len(chunk):
            raise ArchiveError(f"gaia: a chunk returned {len(tab)} rows, its TOP limit; lower chunk_size",
                               service="gaia", query=adql)
        parts.append(tab)
    out = vstack(parts, metadata_conflicts="silent") if len(parts) > 1 else parts[0]
    out.meta = {"service": "gaia", "chunks": len(parts), "queries": [p.meta.get("query") for p in parts]}
    return out


def gaia_by_source_id(
    ids: Iterable[int], columns: Sequence[str] = DEFAULT_COLUMNS, release: str = "dr3", *,
    chunk_size: int = 1000, progress: bool = True, timeout: float | None = None,
    retries: int | None = None,
):
    """Astrometry, photometry and quality columns for a list of Gaia ``source_id``.

    Parameters
    ----------
    ids : iterable of int, shape (n,)
        Gaia source_id of ``release`` (DR2 ids for ``"dr2"``; EDR3 and DR3 share ids).
        Duplicates are dropped.
    columns : sequence of str
        ``gaia_source`` columns (or ADQL expressions). ``"ruwe"`` of DR2 comes
        from ``gaiadr2.ruwe`` through a left join.
    release : {"dr2", "edr3", "dr3"}
    chunk_size : int
        Ids per query (at most 2000, the synchronous limit). Each chunk is
        cached as it finishes, so an interrupted run resumes where it stopped.
    progress : bool
        Show a progress bar over chunks.
    timeout, retries
        As in :func:`gaia_query`.

    Returns
    -------
    astropy.table.Table
        One row per id found, sorted by ``source_id``; ids the archive does
        not know are absent (join on ``source_id`` to align with an input table).
    """
    select, frm = _select_from(columns, release)

    def adql(chunk: np.ndarray) -> str:
        return (f"SELECT TOP {len(chunk)} {select} FROM {frm} "
                f"WHERE g.source_id IN ({', '.join(str(int(i)) for i in chunk)})")

    tab = _chunked(ids, chunk_size, adql, desc=f"Gaia {release} by source_id", progress=progress,
                   timeout=timeout, retries=retries)
    if "source_id" in tab.colnames:
        tab.sort("source_id")
    return tab


def gaia_cone(
    ra: float, dec: float, radius_deg: float, columns: Sequence[str] = DEFAULT_COLUMNS,
    release: str = "dr2", *, where: str | None = None, timeout: float | None = None,
    retries: int | None = None,
):
    """Every source of ``release`` within ``radius_deg`` of (``ra``, ``dec``), as one async job.

    Parameters
    ----------
    ra, dec : float
        Cone centre, ICRS, degrees.
    radius_deg : float
        Cone radius, degrees.
    columns : sequence of str
        As in :func:`gaia_by_source_id`.
    release : {"dr2", "edr3", "dr3"}
    where : str, optional
        Extra ADQL condition on alias ``g`` (and ``r`` for DR2 RUWE), e.g.
        ``"g.parallax > 15"``: cuts the download at the archive.

    Returns
    -------
    astropy.table.Table
    """
    select, frm = _select_from(columns, release)
    adql = (f"SELECT {select} FROM {frm} WHERE 1 = CONTAINS(POINT('ICRS', g.ra, g.dec), "
            f"CIRCLE('ICRS', {float(ra):.10g}, {float(dec):.10g}, {float(radius_deg):.10g}))")
    if where:
        adql += f" AND ({where})"
    return gaia_query(adql, timeout=timeout, retries=retries)


def hyades_cone(
    release: str = "dr2", columns: Sequence[str] = DEFAULT_COLUMNS, *,
    where: str | None = "g.parallax > 15", timeout: float | None = None, retries: int | None = None,
):
    """Li et al. (2021) sec. 5.1: Gaia sources within 5 deg of the Hyades centre (66.725, 15.867).

    The default ``where`` keeps parallaxes above 15 mas: every Hyades member
    (about 21 mas; the paper's 40-50 pc) survives it, and it shrinks the
    answer from about a million field stars to a few thousand rows. Pass
    ``where=None`` for the whole cone. Membership cuts belong to
    ``mdslam.selection``.
    """
    return gaia_cone(*HYADES_CENTRE, HYADES_RADIUS, columns, release, where=where,
                     timeout=timeout, retries=retries)


def gaia_dr2_dr3_neighbourhood(
    dr2_ids: Iterable[int], *, chunk_size: int = 500, progress: bool = True,
    timeout: float | None = None, retries: int | None = None,
):
    """The archive's DR2 -> DR3 crossmatch (``gaiadr3.dr2_neighbourhood``) for DR2 ids.

    Parameters
    ----------
    dr2_ids : iterable of int
        Gaia DR2 source_id.
    chunk_size : int
        DR2 ids per query; a DR2 source may have several DR3 neighbours, so
        each query asks for up to four times as many rows.

    Returns
    -------
    astropy.table.Table
        ``dr2_source_id``, ``dr3_source_id``, ``angular_distance`` (mas),
        ``magnitude_difference`` (mag), ``proper_motion_propagation`` (bool);
        every neighbour, sorted by DR2 id then angular distance. Keep the
        nearest per DR2 id for a one-to-one match.
    """
    def adql(chunk: np.ndarray) -> str:
        return ("SELECT TOP {top} g.dr2_source_id, g.dr3_source_id, g.angular_distance, "
                "g.magnitude_difference, g.proper_motion_propagation FROM gaiadr3.dr2_neighbourhood AS g "
                "WHERE g.dr2_source_id IN ({ids})").format(
                    top=min(4 * len(chunk), _SYNC_MAX_ROWS), ids=", ".join(str(int(i)) for i in chunk))

    if chunk_size > _SYNC_MAX_ROWS // 4:
        raise ValueError(f"chunk_size must be at most {_SYNC_MAX_ROWS // 4}")
    tab = _chunked(dr2_ids, chunk_size, adql, desc="Gaia DR2->DR3 neighbourhood", progress=progress,
                   timeout=timeout, retries=retries)
    if len(tab):
        tab.sort(["dr2_source_id", "angular_distance"])
    return tab


#: Largest |G_DR3 - G_DR2| (mag) of a neighbour still taken as the same star.
DR2_DR3_MAX_DMAG = 1.0


def best_dr3_neighbour(neighbours, *, max_magnitude_difference: float = DR2_DR3_MAX_DMAG):
    """One Gaia DR3 counterpart per DR2 source from ``gaiadr3.dr2_neighbourhood`` rows.

    The rule: a neighbour whose G magnitude differs from the DR2 source's by
    more than ``max_magnitude_difference`` is taken for another star and
    dropped (a missing ``magnitude_difference`` does not drop it); of the rest,
    the one at the smallest ``angular_distance`` wins; equal (or missing)
    distances go to the smallest ``|magnitude_difference|``, then to the
    smallest DR3 id, so the choice is deterministic. A DR2 source whose every
    neighbour is dropped has no counterpart.

    Parameters
    ----------
    neighbours : astropy.table.Table
        Rows of :func:`gaia_dr2_dr3_neighbourhood`: ``dr2_source_id``,
        ``dr3_source_id`` (int64), ``angular_distance`` (mas),
        ``magnitude_difference`` (mag, DR3 minus DR2).
    max_magnitude_difference : float
        In mag.

    Returns
    -------
    astropy.table.Table
        One row per DR2 id with a counterpart, sorted by ``dr2_source_id``:
        ``dr2_source_id``, ``dr3_source_id``, ``angular_distance`` (mas),
        ``magnitude_difference`` (mag) and ``n_neighbours`` (rows the archive
        listed for that DR2 id, before the magnitude test).
    """
    from astropy.table import Table

    dr2 = np.asarray(neighbours["dr2_source_id"], dtype=np.int64)
    dr3 = np.asarray(neighbours["dr3_source_id"], dtype=np.int64)
    dist = np.ma.filled(np.ma.asarray(neighbours["angular_distance"], dtype=float), np.nan)
    dmag = np.ma.filled(np.ma.asarray(neighbours["magnitude_difference"], dtype=float), np.nan)
    uniq, n_all = np.unique(dr2, return_counts=True)
    keep = ~(np.abs(dmag) > max_magnitude_difference)  # NaN passes
    order = np.lexsort((dr3[keep], np.nan_to_num(np.abs(dmag[keep]), nan=np.inf),
                        np.nan_to_num(dist[keep], nan=np.inf), dr2[keep]))
    idx = np.flatnonzero(keep)[order]
    _, first = np.unique(dr2[idx], return_index=True)
    best = idx[first]
    out = Table()
    out["dr2_source_id"] = dr2[best]
    out["dr3_source_id"] = dr3[best]
    out["angular_distance"] = dist[best]
    out["angular_distance"].unit = "mas"
    out["magnitude_difference"] = dmag[best]
    out["magnitude_difference"].unit = "mag"
    out["n_neighbours"] = n_all[np.searchsorted(uniq, dr2[best])]
    return out


def gaia_dr3_ids_from_dr2(
    dr2_ids: Iterable[int], *, max_magnitude_difference: float = DR2_DR3_MAX_DMAG,
    chunk_size: int = 500, progress: bool = True, timeout: float | None = None,
    retries: int | None = None,
) -> np.ndarray:
    """Gaia DR3 source_id of each Gaia DR2 source_id, through ``gaiadr3.dr2_neighbourhood``.

    DR2 and DR3 ids differ for the sources whose observations were regrouped
    between the releases, so a DR2 id must not be looked up in
    ``gaiadr3.gaia_source`` directly. The archive's neighbourhood table is
    queried (:func:`gaia_dr2_dr3_neighbourhood`) and one neighbour is chosen
    per DR2 source by :func:`best_dr3_neighbour`.

    Parameters
    ----------
    dr2_ids : iterable of int, shape (n,)
        Gaia DR2 source_id; values <= 0 are "no id".
    max_magnitude_difference : float
        As in :func:`best_dr3_neighbour` (mag).
    chunk_size, progress, timeout, retries
        As in :func:`gaia_dr2_dr3_neighbourhood`.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
        The DR3 id aligned with ``dr2_ids``; 0 where there is none.
    """
    ids = np.asarray(list(dr2_ids) if not isinstance(dr2_ids, np.ndarray) else dr2_ids, dtype=np.int64)
    out = np.zeros(ids.shape, dtype=np.int64)
    valid = ids > 0
    if not valid.any():
        return out
    neigh = gaia_dr2_dr3_neighbourhood(ids[valid], chunk_size=chunk_size, progress=progress,
                                       timeout=timeout, retries=retries)
    if len(neigh) == 0:
        return out
    best = best_dr3_neighbour(neigh, max_magnitude_difference=max_magnitude_difference)
    lookup = dict(zip(np.asarray(best["dr2_source_id"]).tolist(), np.asarray(best["dr3_source_id"]).tolist(),
                      strict=True))
    out[valid] = [lookup.get(int(i), 0) for i in ids[valid]]
    return out


# --------------------------------------------------------------------------- #
# XP sampled spectra through DataLink
# --------------------------------------------------------------------------- #


def _parse_xp_zip(path: Path):
    """Read every ``XP_SAMPLED-...`` member of a DataLink zip (any archive format) into one table."""
    from ..spectra import SpectrumReadError, read_gaia_xp_sampled

    try:
        with _quiet_astropy():
            return read_gaia_xp_sampled(path)
    except SpectrumReadError as exc:
        if "without an XP_SAMPLED member" in exc.problem:        # no source had XP spectra
            from astropy.table import Table

            out = Table({"source_id": np.zeros(0, np.int64), "flux": np.zeros((0, 0)),
                         "flux_error": np.zeros((0, 0))})
            out.meta["wavelength"] = np.empty(0)
            return out
        raise ArchiveError(f"gaia: {exc}", service="gaia") from exc


def gaia_xp_sampled(
    ids: Iterable[int], *, release: str = "Gaia DR3", chunk_size: int = 500, progress: bool = True,
    timeout: float | None = None, retries: int | None = None,
):
    """Gaia XP sampled mean spectra (343 px, 336-1020 nm) through the archive's DataLink.

    Parameters
    ----------
    ids : iterable of int, shape (n,)
        Gaia DR3 source_id.
    release : str
        DataLink ``RELEASE`` value.
    chunk_size : int
        Ids per DataLink request (the archive accepts up to 5000); each
        chunk's zip is cached as it arrives.

    Returns
    -------
    astropy.table.Table
        ``source_id`` (int64), ``flux`` and ``flux_error`` of shape
        (n_found, 343) in W m^-2 nm^-1, sorted by ``source_id``;
        ``meta['wavelength']``: the grid in Angstrom (3360-10200, 20 A steps),
        the convention of :func:`mdslam.datasets.gaiaxp_wavelength`. Sources
        without XP spectra are absent. ``mdslam.spectra.read_gaiaxp`` turns the
        table into ``Spectra``.
    """
    from astropy.table import vstack
    from tqdm.auto import tqdm

    if chunk_size < 1 or chunk_size > 5000:
        raise ValueError("chunk_size must be 1..5000")
    uniq = _unique_ids(ids)
    chunks = [uniq[i:i + chunk_size] for i in range(0, uniq.size, chunk_size)]
    net = settings(timeout, retries)
    parts = []
    for chunk in tqdm(chunks, desc="Gaia XP sampled", unit="chunk", disable=not progress or len(chunks) < 2):
        id_text = ",".join(str(int(i)) for i in chunk)
        params = {"VALID_DATA": "false", "ID": id_text, "RELEASE": release,
                  "DATA_STRUCTURE": "INDIVIDUAL", "FORMAT": "votable",
                  "RETRIEVAL_TYPE": "XP_SAMPLED", "USE_ZIP_ALWAYS": "true"}
        query = "DataLink " + "&".join(f"{k}={v}" for k, v in params.items())
        entry = CacheEntry(f"gaia_xp/{query_key('gaia_xp', query)}.zip", "gaia", query)
        path = entry.find()
        if path is None:
            if net.offline:
                raise entry.unavailable("Gaia XP sampled spectra")

            def attempt(entry=entry, params=params) -> None:
                entry.part.parent.mkdir(parents=True, exist_ok=True)
                entry.part.unlink(missing_ok=True)
                with contextlib.redirect_stdout(io.StringIO()):
                    _datalink(net).load_data(params_dict=params, output_file=str(entry.part))
                with zipfile.ZipFile(entry.part) as zf:
                    bad = zf.testzip()
                if bad is not None:
                    raise zipfile.BadZipFile(f"corrupt member {bad}")

            with_retries(attempt, service="gaia", query=query, what="DataLink XP_SAMPLED request", net=net,
                         hint=entry.hint())
            path = entry.commit(entry.part, ids=len(chunk), url=service_url("gaia_data"))
        parts.append(_parse_xp_zip(path))
    nonempty = [p for p in parts if len(p)]
    out = vstack(nonempty, metadata_conflicts="silent") if len(nonempty) > 1 else (nonempty or parts)[0]
    out.meta["wavelength"] = next((p.meta["wavelength"] for p in nonempty), parts[0].meta["wavelength"])
    out.meta["release"] = release
    out.sort("source_id")
    return out
