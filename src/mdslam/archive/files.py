"""Files from the survey archives: SDSS SAS summary files and spectra, LAMOST spectra and catalogues.

Every file is cached at a path that mirrors the archive's own tree
(``<cache>/archive/sas/dr17/apogee/...``, ``<cache>/archive/lamost/dr6/v2/...``),
with its URL beside it in a ``.json`` record, and is downloaded by
:func:`mdslam.archive._core.download`: streamed with a progress bar,
resumed after an interruption, size-checked and renamed into place only when
complete. A file the dataset registry already declares (the OCCAM VACs) is
served by the registry instead: mirror first, checksum verified.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from .. import datasets
from ._core import DEFAULT_URLS, CacheEntry, download, service_url, settings

__all__ = [
    "SDSS_FILES",
    "LAMOST_RELEASES",
    "LAMOST_CATALOGUES",
    "sdss_file",
    "sdss_table",
    "boss_spectrum",
    "boss_spectra",
    "decode_specobjid",
    "lamost_spectrum",
    "lamost_spectra",
    "lamost_catalogue",
    "li2021_catalogue",
]

#: Summary files on the SDSS Science Archive Server, path below ``.../sas/``.
SDSS_FILES = {
    # APOGEE DR16 (Li et al. 2021 training labels) and DR17 allStar
    "allStar-dr16": "dr16/apogee/spectro/aspcap/r12/l33/allStar-r12-l33.fits",
    "allStar-dr17": "dr17/apogee/spectro/aspcap/dr17/synspec_rev1/allStar-dr17-synspec_rev1.fits",
    "allStarLite-dr17": "dr17/apogee/spectro/aspcap/dr17/synspec_rev1/allStarLite-dr17-synspec_rev1.fits",
    # SDSS-V DR19 Astra summaries (Qiu et al. 2025)
    "astraAllStarASPCAP-0.6.0": "dr19/env/MWM_ASTRA/0.6.0/summary/astraAllStarASPCAP-0.6.0.fits.gz",
    "astraAllStarApogeeNet-0.6.0": "dr19/env/MWM_ASTRA/0.6.0/summary/astraAllStarApogeeNet-0.6.0.fits.gz",
    "astraAllStarSlam-0.6.0": "dr19/env/MWM_ASTRA/0.6.0/summary/astraAllStarSlam-0.6.0.fits.gz",
    "astraAllStarBossNet-0.6.0": "dr19/env/MWM_ASTRA/0.6.0/summary/astraAllStarBossNet-0.6.0.fits.gz",
    # DR19 BOSS spectrum summary (field, mjd, catalogid of every BOSS spectrum)
    "spAll-lite-v6_1_3": "dr19/spectro/boss/redux/v6_1_3/spAll-lite-v6_1_3.fits.gz",
    # OCCAM open-cluster VACs (also in the dataset registry)
    "occam_member-DR16": "dr16/apogee/vac/apogee-occam/occam_member-DR16.fits",
    "occam_cluster-DR16": "dr16/apogee/vac/apogee-occam/occam_cluster-DR16.fits",
    "occam_member-DR17": "dr17/apogee/vac/apogee-occam/occam_member-DR17.fits",
    "occam_cluster-DR17": "dr17/apogee/vac/apogee-occam/occam_cluster-DR17.fits",
}

#: LAMOST data releases the papers used -> the version segment of their URLs.
LAMOST_RELEASES = {"dr6": "v2", "dr7": "v2.0", "dr10": "v2.0", "dr11": "v1.0"}

#: (release, catalogue) -> file name on the LAMOST site (``.../catdl?name=<file>``).
LAMOST_CATALOGUES = {
    ("dr6", "mstellar"): "dr6_v2_mstellar_LRS.fits.gz",   # Li et al. 2021: the DR6 M dwarf catalogue
    ("dr6", "stellar"): "dr6_v2_stellar_LRS.fits.gz",
    ("dr7", "mstellar"): "dr7_v2.0_LRS_mstellar.fits.gz",
    ("dr11", "stellar"): "dr11_v1.0_LRS_stellar.fits.gz",  # Qiu et al. 2025: FGK primaries
    ("dr11", "mstellar"): "dr11_v1.0_LRS_mstellar.fits.gz",
}

#: The published Li et al. (2021) catalogue (their Table 4), path below the paperdata root.
LI2021_PATH = "jordan/Mdwarf/jdli21.fits"


def _registry_path(url: str) -> Path | None:
    """The registry's verified local copy of ``url``, if some dataset declares that URL."""
    for ds in datasets.REGISTRY.values():
        for rel, u in ds.urls.items():
            if u == url:
                paths = datasets.fetch(ds.name)
                return paths[list(ds.files).index(rel)]
    return None


def _fits_table(path: Path, hdu: int | str = 1, columns: Iterable[str] | None = None):
    from astropy.io import fits
    from astropy.table import Table

    if path.name.endswith((".csv", ".csv.gz")):
        tab = Table.read(path, format="ascii.csv", fast_reader=True)
        if columns is not None:
            tab = tab[list(columns)]
        tab.meta["file"] = str(path)
        return tab
    with fits.open(path, memmap=not str(path).endswith(".gz")) as hdul:
        data = hdul[hdu].data
        if columns is not None:
            cols = list(columns)
            tab = Table([data[c] for c in cols], names=cols, copy=True)
            for c in cols:
                unit = hdul[hdu].columns[c].unit
                if unit:
                    try:
                        tab[c].unit = unit
                    except ValueError:
                        pass
        else:
            tab = Table.read(hdul[hdu])
    tab.meta["file"] = str(path)
    return tab


# --------------------------------------------------------------------------- #
# SDSS
# --------------------------------------------------------------------------- #
def _sas_relpath(name_or_url: str, base: str) -> str:
    if name_or_url in SDSS_FILES:
        return SDSS_FILES[name_or_url]
    if "://" in name_or_url:
        path = urlsplit(name_or_url).path
        base_path = urlsplit(base).path.rstrip("/")
        if "/sas/" in path:
            return path.split("/sas/", 1)[1]
        if base_path and path.startswith(base_path + "/"):
            return path[len(base_path) + 1:]
        return path.lstrip("/")
    return name_or_url.lstrip("/")


def sdss_file(
    name_or_url: str, *, url: str | None = None, sha256: str | None = None, progress: bool = True,
    timeout: float | None = None, retries: int | None = None,
) -> Path:
    """A file from the SDSS Science Archive Server, downloaded once and cached.

    Parameters
    ----------
    name_or_url : str
        A key of :data:`SDSS_FILES` (``"allStar-dr17"``, ``"astraAllStarSlam-0.6.0"``...),
        a path below ``sas/`` (``"dr17/apogee/..."``) or a full
        ``https://data.sdss.org/sas/...`` URL.
    url : str, optional
        SAS root (default ``MDSLAM_SAS_URL`` or ``https://data.sdss.org/sas``).
    sha256 : str, optional
        Expected checksum; a mismatch discards the download and retries.
    progress : bool
        Byte progress bar (these files reach several GB).
    timeout, retries
        As in :func:`mdslam.archive.gaia_query`.

    Returns
    -------
    Path
        The local FITS file (the cache, the mirror, or the registry's copy).
    """
    base = service_url("sas", url)
    rel = _sas_relpath(name_or_url, base)
    registered = _registry_path(f"{DEFAULT_URLS['sas']}/{rel}")
    if registered is not None:
        return registered
    entry = CacheEntry(f"sas/{rel}", "sas", f"{base}/{rel}")
    return download(f"{base}/{rel}", entry, net=settings(timeout, retries), progress=progress,
                    sha256=sha256, kind="fits", what=f"SDSS file {Path(rel).name}")


def sdss_table(name_or_url: str, *, hdu: int | str = 1, columns: Iterable[str] | None = None, **kwargs):
    """An SDSS summary file read as an astropy Table (``columns`` limits memory use).

    ``kwargs`` go to :func:`sdss_file`. As we read the DR19 data model, the
    Astra summaries keep results from BOSS spectra in HDU 1 and from APOGEE
    spectra in HDU 2: pass ``hdu=2`` for ASPCAP and APOGEE Net.
    """
    return _fits_table(sdss_file(name_or_url, **kwargs), hdu=hdu, columns=columns)


def decode_specobjid(specobjid: int) -> dict:
    """Plate, MJD, fiber and run2d packed into an SDSS-I..IV ``specobjid``.

    Bits 50-63 plate, 38-49 fiber, 24-37 MJD-50000, 10-23 run2d (integer
    N for runs named N, else (major-5)*10000 + minor*100 + patch for vM_m_p).
    """
    s = int(specobjid)
    plate, fiber = s >> 50, (s >> 38) & 0xFFF
    mjd = ((s >> 24) & 0x3FFF) + 50000
    code = (s >> 10) & 0x3FFF
    if code in (26, 103, 104):
        run2d = str(code)
    else:
        run2d = f"v{code // 10000 + 5}_{(code // 100) % 100}_{code % 100}"
    return {"plate": plate, "mjd": mjd, "fiberid": fiber, "run2d": run2d}


def _boss_relpath(field: int | None, mjd: int, catalogid: int | None, run2d: str, release: str,
                  kind: str, plate: int | None = None, fiber: int | None = None) -> str:
    if plate is not None:  # SDSS-I..IV plate spectra
        tree = "sdss" if run2d in ("26", "103", "104") else "eboss"
        name = f"spec-{plate:04d}-{mjd:05d}-{fiber:04d}.fits"
        return f"{release}/{tree}/spectro/redux/{run2d}/spectra/{kind}/{plate:04d}/{name}"
    name = f"spec-{int(field):06d}-{mjd}-{int(catalogid)}.fits"
    return f"{release}/spectro/boss/redux/{run2d}/spectra/{kind}/{int(field):06d}/{mjd}/{name}"


def boss_spectrum(
    field: int | None = None, mjd: int | None = None, catalogid: int | None = None, *,
    specobjid: int | None = None, run2d: str = "v6_1_3", release: str | None = None,
    kind: str = "lite", url: str | None = None, progress: bool = False,
    timeout: float | None = None, retries: int | None = None,
) -> Path:
    """One BOSS coadd ``spec-*.fits`` from the SAS: SDSS-V by (field, mjd, catalogid), older by specobjid.

    Parameters
    ----------
    field, mjd, catalogid : int
        SDSS-V DR19 identifiers (spAll columns FIELD, MJD, CATALOGID).
    specobjid : int, optional
        An SDSS-I..IV spectrum id instead; ``release`` then defaults to dr17
        and run2d comes from the id.
    run2d : str
        BOSS pipeline version (DR19: ``v6_1_3``).
    release : str, optional
        SAS data release directory: ``dr19`` for SDSS-V ids, ``dr17`` for a specobjid.
    kind : {"lite", "full"}
        ``lite`` holds the coadd only (about 0.2 MB), ``full`` every exposure.

    Returns
    -------
    Path
        The cached FITS file; read it with ``mdslam.spectra.read_boss``.
    """
    if specobjid is not None:
        ids = decode_specobjid(specobjid)
        rel = _boss_relpath(None, ids["mjd"], None, ids["run2d"], release or "dr17", kind,
                            plate=ids["plate"], fiber=ids["fiberid"])
    else:
        if field is None or mjd is None or catalogid is None:
            raise ValueError("give field, mjd and catalogid (SDSS-V) or specobjid (SDSS-I..IV)")
        rel = _boss_relpath(field, int(mjd), catalogid, run2d, release or "dr19", kind)
    return sdss_file(rel, url=url, progress=progress, timeout=timeout, retries=retries)


def boss_spectra(rows: Iterable[tuple[int, int, int]], *, progress: bool = True, **kwargs):
    """Many BOSS spectra by (field, mjd, catalogid), read into one ``mdslam.spectra.Spectra``.

    Every file is cached as it arrives, so a rerun after an interruption
    downloads only what is missing. ``kwargs`` go to :func:`boss_spectrum`.
    """
    from tqdm.auto import tqdm

    from .. import spectra

    rows = list(rows)
    paths = [boss_spectrum(*r, **kwargs) for r in tqdm(rows, desc="BOSS spectra", unit="file",
                                                        disable=not progress)]
    return spectra.read_boss(paths)


# --------------------------------------------------------------------------- #
# LAMOST
# --------------------------------------------------------------------------- #
def _lamost_version(release: str, version: str | None) -> tuple[str, str]:
    rel = release.lower()
    if version is None:
        try:
            version = LAMOST_RELEASES[rel]
        except KeyError:
            raise ValueError(f"unknown LAMOST release {release!r}; known: {', '.join(LAMOST_RELEASES)}"
                             " (or pass version=...)") from None
    return rel, version


def lamost_spectrum(
    obsid: int, release: str = "dr6", *, version: str | None = None, url: str | None = None,
    progress: bool = False, timeout: float | None = None, retries: int | None = None,
) -> Path:
    """One LAMOST low-resolution spectrum by ``obsid`` (``<site>/<dr>/<version>/spectrum/fits/<obsid>``).

    Parameters
    ----------
    obsid : int
        LAMOST spectrum id (catalogue column ``obsid``).
    release : str
        ``"dr6"`` (Li et al. 2021), ``"dr11"`` (Qiu et al. 2025), ...
    version : str, optional
        The release's version segment (default :data:`LAMOST_RELEASES`).

    Returns
    -------
    Path
        The cached FITS file (gzip-compressed as LAMOST serves it; astropy
        and ``mdslam.spectra.read_lamost`` read it as is).
    """
    rel, ver = _lamost_version(release, version)
    base = service_url("lamost", url)
    remote = f"{base}/{rel}/{ver}/spectrum/fits/{int(obsid)}"
    entry = CacheEntry(f"lamost/{rel}/{ver}/spectra/{int(obsid)}.fits", "lamost", remote)
    return download(remote, entry, net=settings(timeout, retries), progress=progress, kind="fits",
                    what=f"LAMOST {rel} spectrum obsid={int(obsid)}")


def lamost_spectra(obsids: Iterable[int], release: str = "dr6", *, progress: bool = True, **kwargs):
    """Many LAMOST spectra by obsid, read into one ``mdslam.spectra.Spectra``.

    Each file is cached as it arrives (a rerun fetches only what is missing);
    ``kwargs`` go to :func:`lamost_spectrum`.
    """
    from tqdm.auto import tqdm

    from .. import spectra

    ids = [int(o) for o in obsids]
    paths = [lamost_spectrum(o, release, **kwargs) for o in tqdm(ids, desc=f"LAMOST {release} spectra",
                                                                unit="file", disable=not progress)]
    return spectra.read_lamost(paths)


def lamost_catalogue(
    name: str = "mstellar", release: str = "dr6", *, version: str | None = None,
    url: str | None = None, hdu: int = 1, columns: Iterable[str] | None = None,
    progress: bool = True, timeout: float | None = None, retries: int | None = None,
):
    """A LAMOST catalogue (``.../catdl?name=<file>``) as an astropy Table.

    Parameters
    ----------
    name : str
        ``"mstellar"`` (the M star catalogue), ``"stellar"`` (AFGK parameters),
        or a file name as listed on the release's catalogue page.
    release : str
        ``"dr6"`` for Li et al. 2021, ``"dr11"`` for Qiu et al. 2025.
    columns : iterable of str, optional
        Read only these columns.

    Returns
    -------
    astropy.table.Table
    """
    rel, ver = _lamost_version(release, version)
    fname = LAMOST_CATALOGUES.get((rel, name), name)
    if not fname.endswith((".fits", ".fits.gz", ".csv.gz", ".csv")):
        fname = f"{rel}_{ver}_LRS_{name}.fits.gz"
    base = service_url("lamost", url)
    remote = f"{base}/{rel}/{ver}/catdl?name={fname}"
    entry = CacheEntry(f"lamost/{rel}/{ver}/catalogues/{fname}", "lamost", remote)
    path = download(remote, entry, net=settings(timeout, retries), progress=progress,
                    kind=None if ".csv" in fname else "fits", what=f"LAMOST {rel} catalogue {fname}")
    return _fits_table(path, hdu=hdu, columns=columns)


def li2021_catalogue(
    *, url: str | None = None, columns: Iterable[str] | None = None, progress: bool = True,
    timeout: float | None = None, retries: int | None = None,
):
    """The published Li et al. (2021) catalogue of LAMOST DR6 M dwarfs (their Table 4), for comparisons.

    Downloaded once from ``http://paperdata.china-vo.org/jordan/Mdwarf/jdli21.fits``
    (root overridable by ``MDSLAM_PAPERDATA_URL``).

    Returns
    -------
    astropy.table.Table
        The columns of the paper's Table 2 (``obsid``, ``source_id``,
        ``TEFF_AP``, ``M_H_AP``, ``TEFF_BT``... as published).
    """
    base = service_url("paperdata", url)
    remote = f"{base}/{LI2021_PATH}"
    entry = CacheEntry(f"paperdata/{LI2021_PATH}", "paperdata", remote)
    path = download(remote, entry, net=settings(timeout, retries), progress=progress, kind="fits",
                    what="Li et al. 2021 catalogue")
    return _fits_table(path, columns=columns)

