"""VizieR through ``astroquery.vizier``: the papers' published tables, every row.

The request astroquery builds (its ``-source``/``-out.max=unlimited``/column
filter script) is the cache key; VizieR's VOTable reply is kept verbatim as
``<cache>/archive/vizier/<key>.vot`` with the request beside it. Big tables
can be fetched in slices of one numeric column (``chunk_column``), one
cached request per slice, so an interrupted download resumes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

from . import _core

__all__ = ["PAPER_CATALOGUES", "vizier_tables", "vizier_catalog"]

#: The VizieR catalogues the two papers use (short name -> catalogue or table id).
PAPER_CATALOGUES = {
    "birky2020": "J/ApJ/892/31",            # B20: APOGEE M dwarfs, The Cannon Teff/[Fe/H]
    "mann2015": "J/ApJ/804/64",             # Mann et al. 2015: Teff, R, M, [Fe/H] of 183 M dwarfs
    "hyades_gaia2018": "J/A+A/616/A10/tablea1a",  # Gaia Collaboration 2018 cluster members
    "el_badry2021": "J/MNRAS/506/2269",     # El-Badry, Rix & Heintz 2021: 1.3 M wide binaries (Gaia EDR3)
    "tian2020": "J/ApJS/246/4",             # Tian et al. 2020: 807,611 wide-binary candidates (Gaia DR2)
    "li2021": "J/ApJS/253/45",              # Li et al. 2021: LAMOST DR6 M dwarf parameters
    "zhong2019": "J/ApJS/244/8",            # Zhong et al. 2019 (ApJS 244, 8): LAMOST DR5 M giants and dwarfs
}

_NOT_FOUND_RE = re.compile(r"(?i)error|not found|no catalogue|unknown")


def _infos(tree) -> list[str]:
    """The texts of a VOTable's INFO elements (top level and per resource)."""
    infos = list(tree.infos)
    for res in tree.resources:
        infos.extend(res.infos)
    return [" ".join(str(x) for x in (i.value, i.content) if x) for i in infos]


_ERROR_RE = re.compile(rb'<INFO[^>]*name="QUERY_STATUS"[^>]*value="ERROR"[^>]*>(.*?)</INFO>', re.S)


def _viz(base: str, columns: Sequence[str], net: _core.Settings):
    from astroquery.vizier import VizierClass

    class _Vizier(VizierClass):
        """astroquery's Vizier with a configurable server root (scheme included)."""

        def _server_to_url(self, return_type: str = "votable") -> str:
            return f"{base}/viz-bin/{return_type}"

    return _Vizier(columns=list(columns), row_limit=-1, timeout=net.timeout)


def _resolve(catalog: str) -> str:
    return PAPER_CATALOGUES.get(catalog, catalog)


def _parse(path: Path, request: str) -> dict:
    from astroquery.vizier import VizierClass

    content = path.read_bytes()
    with _core._quiet_astropy():
        tables = VizierClass()._parse_result(SimpleNamespace(content=content))
    out = {}
    for name in tables.keys():
        tab = tables[name]
        tab.meta.update({"service": "vizier", "catalog": name, "query": request, "cache": str(path)})
        out[name] = tab
    return out


def _fetch(catalog: str, constraints: dict, columns: Sequence[str], net: _core.Settings, base: str | None) -> dict:
    root = _core.service_url("vizier", base)
    viz = _viz(root, columns, net)
    payload = viz.query_constraints_async(catalog=catalog, get_query_payload=True, **constraints)
    entry = _core.CacheEntry(f"vizier/{_core.query_key('vizier', payload)}.vot", "vizier", payload)
    found = entry.find()
    if found is not None:
        return _parse(found, payload)
    if net.offline:
        raise entry.unavailable(f"VizieR catalogue {catalog}")

    def attempt() -> None:
        response = viz.query_constraints_async(catalog=catalog, cache=False, **constraints)
        response.raise_for_status()
        content = response.content
        m = _ERROR_RE.search(content)
        if m:
            raise _core._Permanent(f"VizieR says: {m.group(1).decode('utf-8', 'replace').strip()}")
        if not content.lstrip().startswith(b"<?xml"):
            raise _core._Permanent(f"VizieR did not answer with a VOTable: {content[:300]!r}")
        entry.part.parent.mkdir(parents=True, exist_ok=True)
        entry.part.write_bytes(content)
        with _core._quiet_astropy():
            from astropy.io import votable

            tree = votable.parse(str(entry.part))  # a cut reply fails here, before it is cached
        if not list(tree.iter_tables()):
            notes = _infos(tree)
            if any(_NOT_FOUND_RE.search(n) for n in notes):
                entry.part.unlink()
                raise _core._Permanent("VizieR says: " + "; ".join(notes))

    _core.with_retries(attempt, service="vizier", query=payload, what=f"catalogue {catalog}", net=net,
                 hint=entry.hint())
    path = entry.commit(entry.part, catalog=catalog, url=f"{root}/viz-bin/votable")
    return _parse(path, payload)


def vizier_tables(
    catalog: str, *, columns: Sequence[str] = ("**",), chunk_column: str | None = None,
    chunk_edges: Sequence[float] | None = None, progress: bool = True, url: str | None = None,
    timeout: float | None = None, retries: int | None = None, **constraints: str,
) -> dict:
    """Every table of a VizieR catalogue, all rows (``-out.max=unlimited``), cached.

    Parameters
    ----------
    catalog : str
        A VizieR id (``"J/ApJ/892/31"``, or one table: ``"J/ApJ/892/31/table6"``)
        or a short name of :data:`PAPER_CATALOGUES`.
    columns : sequence of str
        Columns to return; ``"**"`` (default) is every column.
    chunk_column, chunk_edges : optional
        Fetch in slices ``edges[i] <= column < edges[i+1]`` (the last slice
        includes its upper edge), one cached request each, for tables too big
        for one reply.
    url : str, optional
        VizieR server root (default ``MDSLAM_VIZIER_URL`` or the CDS).
    timeout, retries
        As in :func:`mdslam.archive.gaia_query`.
    **constraints : str
        VizieR column filters, e.g. ``Cluster="Hyades"`` or ``Gmag="<12"``.

    Returns
    -------
    dict of str -> astropy.table.Table
        Keyed by VizieR table name; tables with no matching row are absent.
    """
    from astropy.table import vstack
    from tqdm.auto import tqdm

    net = _core.settings(timeout, retries)
    cat = _resolve(catalog)
    if chunk_column is None:
        return _fetch(cat, dict(constraints), columns, net, url)
    if chunk_edges is None or len(chunk_edges) < 2:
        raise ValueError("chunk_edges needs at least two values")
    edges = list(chunk_edges)
    slices = []
    for i, (lo, hi) in enumerate(tqdm(list(zip(edges[:-1], edges[1:], strict=True)), desc=f"VizieR {cat}",
                                      unit="slice", disable=not progress)):
        upper = "<=" if i == len(edges) - 2 else "<"
        slices.append(_fetch(cat, {**constraints, chunk_column: f">={lo:g} & {upper}{hi:g}"}, columns, net, url))
    out: dict = {}
    for part in slices:
        for name, tab in part.items():
            out.setdefault(name, []).append(tab)
    return {name: vstack(tabs, metadata_conflicts="silent") if len(tabs) > 1 else tabs[0]
            for name, tabs in out.items()}


def vizier_catalog(catalog: str, table: str | None = None, **kwargs):
    """One VizieR table, all rows (see :func:`vizier_tables` for the arguments).

    Parameters
    ----------
    catalog : str
        VizieR id or short name of :data:`PAPER_CATALOGUES`.
    table : str, optional
        Which table of the catalogue (``"table6"`` or the full
        ``"J/ApJ/892/31/table6"``); needed when the catalogue has several.

    Returns
    -------
    astropy.table.Table
        Units and descriptions as VizieR gives them; ``meta['query']`` holds
        the request sent, ``meta['cache']`` the cached VOTable. An empty table
        when no row matches the constraints.
    """
    from astropy.table import Table

    cat = _resolve(catalog)
    if table is not None and not table.startswith(cat):
        cat = f"{cat}/{table}"
    tables = vizier_tables(cat, **kwargs)
    if not tables:
        return Table(meta={"service": "vizier", "catalog": cat, "rows": 0})
    if len(tables) == 1:
        return next(iter(tables.values()))
    if cat in tables:
        return tables[cat]
    raise _core.ArchiveError(
        f"vizier: {cat} has {len(tables)} tables ({', '.join(tables)}); choose one with table=...",
        service="vizier", query=cat,
    )
