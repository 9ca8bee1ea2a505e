"""What every archive service shares: settings, errors, the cache, retries and downloads.

Retries follow one policy, a urllib3 ``Retry`` built from the settings
(:func:`retry_policy`): mounted on the ``requests`` session of downloads
(:func:`http_session`: connection failures, timeouts before the reply, HTTP
408/429/5xx, ``Retry-After`` honoured), and driving :func:`with_retries` for
what a session cannot see (astroquery's Gaia TAP client, which speaks
``http.client``; VizieR replies that arrive cut; downloads that stop midway,
which are then resumed with an HTTP Range request).

Settings are read from the environment at call time (so a test or a user can
point a service elsewhere without reimporting) and every public function also
takes them as keyword arguments. Results live in the dataset registry's one
cache, ``mdslam.datasets.cache_dir() / "archive"``, each beside a JSON file
that records the query or URL that produced it; the offline mirror
(``MDSLAM_DATA_MIRROR``) is searched first under the same relative path.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import json
import os
import re
import socket
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .. import datasets

T = TypeVar("T")

__all__ = [
    "retry_policy",
    "http_session",
    "ArchiveError",
    "ArchiveUnavailableError",
    "ENV",
    "DEFAULT_URLS",
    "service_url",
    "settings",
    "cache_root",
    "CacheEntry",
    "download",
]

# --------------------------------------------------------------------------- #
# settings
# --------------------------------------------------------------------------- #
#: Environment variables read by this package (name -> meaning).
ENV = {
    "MDSLAM_GAIA_TAP_URL": "Gaia TAP service (ADQL); astroquery's GaiaClass talks to it",
    "MDSLAM_GAIA_DATA_URL": "Gaia data server (DataLink products such as XP sampled spectra)",
    "MDSLAM_VIZIER_URL": "VizieR server root (astroquery.vizier posts to <root>/viz-bin/votable)",
    "MDSLAM_SAS_URL": "SDSS Science Archive Server root (the '.../sas' directory)",
    "MDSLAM_LAMOST_URL": "LAMOST data release site root",
    "MDSLAM_PAPERDATA_URL": "China-VO paper data root (the Li et al. 2021 catalogue)",
    "MDSLAM_ZENODO_URL": "Zenodo root (the El-Badry et al. 2021 wide-binary catalogue)",
    "MDSLAM_ARCHIVE_TIMEOUT": "seconds without data before a request is abandoned (default 120)",
    "MDSLAM_ARCHIVE_RETRIES": "attempts per request, including the first (default 4)",
    "MDSLAM_ARCHIVE_BACKOFF": "urllib3 backoff factor (default 2): the first retry is immediate, then "
                              "factor * 2**(n-1) seconds before the n-th consecutive retry (at most 60)",
    "MDSLAM_ARCHIVE_OFFLINE": "if set to 1, never touch the network: cache or mirror only",
}

#: The public services' addresses, used unless the variables above say otherwise.
DEFAULT_URLS = {
    "gaia_tap": "https://gea.esac.esa.int/tap-server/tap",
    "gaia_data": "https://gea.esac.esa.int/data-server/data",
    "vizier": "https://vizier.cds.unistra.fr",
    "sas": "https://data.sdss.org/sas",
    "lamost": "https://www.lamost.org",
    "paperdata": "http://paperdata.china-vo.org",
    "zenodo": "https://zenodo.org",
}
_URL_ENV = {
    "gaia_tap": "MDSLAM_GAIA_TAP_URL",
    "gaia_data": "MDSLAM_GAIA_DATA_URL",
    "vizier": "MDSLAM_VIZIER_URL",
    "sas": "MDSLAM_SAS_URL",
    "lamost": "MDSLAM_LAMOST_URL",
    "paperdata": "MDSLAM_PAPERDATA_URL",
    "zenodo": "MDSLAM_ZENODO_URL",
}


def service_url(service: str, override: str | None = None) -> str:
    """Base URL of ``service`` (a key of :data:`DEFAULT_URLS`), without trailing slash.

    ``override`` wins, then the service's environment variable, then the default.
    """
    value = override or os.environ.get(_URL_ENV[service]) or DEFAULT_URLS[service]
    return value.rstrip("/")


@dataclass(frozen=True)
class Settings:
    """Network behaviour of one call: timeout (s), attempts, first backoff (s), offline flag."""

    timeout: float
    retries: int
    backoff: float
    offline: bool


def settings(timeout: float | None = None, retries: int | None = None) -> Settings:
    """Resolve a call's network settings from its arguments and the environment."""
    env = os.environ
    return Settings(
        timeout=float(timeout if timeout is not None else env.get("MDSLAM_ARCHIVE_TIMEOUT", 120)),
        retries=max(1, int(retries if retries is not None else env.get("MDSLAM_ARCHIVE_RETRIES", 4))),
        backoff=float(env.get("MDSLAM_ARCHIVE_BACKOFF", 2.0)),
        offline=env.get("MDSLAM_ARCHIVE_OFFLINE", "").strip().lower() in ("1", "true", "yes"),
    )


# --------------------------------------------------------------------------- #
# errors
# --------------------------------------------------------------------------- #
class ArchiveError(datasets.DatasetError):
    """An archive answered with an error, or kept failing; says what was asked.

    Attributes
    ----------
    service : str
        ``gaia``, ``vizier``, ``sas``, ``lamost``...
    query : str
        The ADQL text, VizieR request or URL that failed.
    status : int or None
        The HTTP status, when there was one.
    """

    def __init__(self, message: str, *, service: str = "", query: str = "", status: int | None = None):
        super().__init__(message)
        self.service = service
        self.query = query
        self.status = status


class ArchiveUnavailableError(ArchiveError, datasets.DatasetUnavailableError):
    """Offline (or the archive unreachable) and the result is neither cached nor mirrored."""


class _Transient(Exception):
    """Internal: a failure worth retrying (timeout, connection, 5xx, truncated body)."""

    def __init__(self, message: str, status: int | None = None, offline: bool = False):
        super().__init__(message)
        self.status = status
        self.offline = offline
        #: True when a session's urllib3 Retry has already spent the attempts on it
        self.spent = False


class _Permanent(Exception):
    """Internal: a failure retrying cannot fix (4xx, a query error, a malformed reply)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _short(text: str, n: int = 600) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


_STATUS_RE = re.compile(r"Error (\d{3})")
_TRANSIENT_REASONS = ("internal server error", "bad gateway", "service unavailable", "gateway timeout",
                      "too many requests")


def classify(exc: BaseException) -> _Transient | _Permanent:
    """Sort an exception from requests, http.client or astroquery into retry / give up."""
    import requests

    if isinstance(exc, (_Transient, _Permanent)):
        return exc
    if isinstance(exc, requests.HTTPError):
        resp = exc.response
        status = resp.status_code if resp is not None else None
        text = str(exc)
        if status is None:  # astroquery's TAP layer raises HTTPError(message) without a response
            m = _STATUS_RE.search(text)
            status = int(m.group(1)) if m else None
        if status is None:
            lower = text.lower()
            return (_Transient if any(r in lower for r in _TRANSIENT_REASONS) else _Permanent)(text)
        if status >= 500 or status in (408, 429):
            return _Transient(text, status)
        return _Permanent(text, status)
    import urllib3

    if isinstance(exc, (requests.Timeout, socket.timeout, TimeoutError, urllib3.exceptions.TimeoutError)):
        return _Transient(f"timed out ({exc})")
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError,
                        http.client.IncompleteRead, http.client.RemoteDisconnected,
                        zipfile.BadZipFile, gzip.BadGzipFile, EOFError,
                        urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError)):
        return _Transient(f"incomplete reply ({type(exc).__name__}: {exc})")
    reason = getattr(exc.args[0], "reason", None) if exc.args else None  # requests wraps MaxRetryError
    if isinstance(exc, requests.ConnectionError) and isinstance(reason, urllib3.exceptions.ReadTimeoutError):
        return _Transient(f"timed out ({reason})")  # the server answered too slowly: not offline
    if isinstance(exc, (requests.ConnectionError, ConnectionError, socket.gaierror)):
        return _Transient(f"cannot connect ({type(exc).__name__}: {exc})", offline=True)
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        return _Transient(f"{type(exc).__name__}: {exc}", offline=isinstance(exc, ConnectionError))
    return _Permanent(f"{type(exc).__name__}: {exc}")


#: HTTP statuses worth another attempt (timeouts, throttling, server-side failures).
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def retry_policy(net: Settings):
    """The one retry policy of every archive call: a ``urllib3.util.Retry``.

    ``net.retries`` attempts in all (so ``net.retries - 1`` retries) for
    connection failures, read timeouts and the statuses of
    :data:`RETRY_STATUS`, on every method (the archive calls are reads, even
    the POSTed queries); exponential backoff with factor ``net.backoff``;
    ``Retry-After`` honoured; the last reply is returned rather than raised,
    so the archive's own error message can be shown.
    """
    from urllib3.util import Retry

    n = max(0, net.retries - 1)
    return Retry(total=n, connect=n, read=n, status=n, other=n, redirect=5,
                 status_forcelist=RETRY_STATUS, allowed_methods=None, backoff_factor=net.backoff,
                 backoff_max=60.0, raise_on_status=False, respect_retry_after_header=True)


def http_session(net: Settings):
    """A ``requests.Session`` whose HTTP(S) adapter retries with :func:`retry_policy`."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry_policy(net))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "mdslam-archive"
    return session


def with_retries(fn: Callable[[], T], *, service: str, query: str, what: str, net: Settings,
                 hint: str = "") -> T:
    """Call ``fn`` until it succeeds, retrying transient failures under :func:`retry_policy`.

    For failures outside a retrying session (astroquery's Gaia client, cut
    replies, downloads to resume); a failure a session has already retried
    (``_Transient.spent``) is not tried again. Raises :class:`ArchiveError`
    (with the server's message and ``query``) on a permanent failure or when
    the attempts run out; :class:`ArchiveUnavailableError` when every attempt
    failed to connect at all (offline), naming ``hint``.
    """
    from urllib3.exceptions import MaxRetryError

    retry = retry_policy(net)
    attempts = 0
    while True:
        attempts += 1
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - sorted by classify
            kind = classify(exc)
            if isinstance(kind, _Permanent):
                raise ArchiveError(
                    f"{service}: {what} failed{_status(kind.status)}: {_short(str(kind))}\n"
                    f"  query: {_short(query, 2000)}",
                    service=service, query=query, status=kind.status,
                ) from exc
            last = kind
            if kind.spent:
                attempts = max(attempts, net.retries)
                break
            try:
                retry = retry.increment(method=None, url=_short(query, 200))
            except MaxRetryError:
                break
            retry.sleep()
    if last.offline:
        raise ArchiveUnavailableError(
            f"{service}: {what}: the archive cannot be reached ({_short(str(last))}) after "
            f"{attempts} attempt(s).\n  needed: {_short(query, 2000)}\n  {hint}",
            service=service, query=query,
        )
    raise ArchiveError(
        f"{service}: {what} failed after {attempts} attempt(s){_status(last.status)}: "
        f"{_short(str(last))}\n  query: {_short(query, 2000)}",
        service=service, query=query, status=last.status,
    )


def _status(status: int | None) -> str:
    return f" (HTTP {status})" if status else ""


# --------------------------------------------------------------------------- #
# the cache
# --------------------------------------------------------------------------- #
def cache_root() -> Path:
    """``datasets.cache_dir() / "archive"``: where every archive result is kept."""
    return datasets.cache_dir() / "archive"


def query_key(*parts: str) -> str:
    """A stable file-name key for a query: the first 32 hex digits of its sha256."""
    h = hashlib.sha256("\n".join(parts).encode("utf-8"))
    return h.hexdigest()[:32]


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class CacheEntry:
    """One archive result: ``<cache>/archive/<relpath>`` and its JSON record ``<relpath>.json``.

    Parameters
    ----------
    relpath : str
        Path below the ``archive`` directory, e.g. ``gaia/<key>.fits`` or
        ``sas/dr17/apogee/.../allStar-dr17-synspec_rev1.fits``; one that would
        lead outside it (``..``, an absolute path) raises
        :class:`mdslam.datasets.UnsafePathError`.
    service : str
        Service name, for messages.
    query : str
        The ADQL text, VizieR request or URL, stored in the JSON record.
    """

    relpath: str
    service: str
    query: str

    def __post_init__(self) -> None:
        # a path built from a URL or a name must stay in its service's folder of the cache (and
        # of the mirror): refuse early, before any request is made
        head, _, rest = str(self.relpath).replace("\\", "/").partition("/")
        if head in ("", ".", "..") or not rest:
            raise datasets.UnsafePathError(
                f"{self.service}: cache path {self.relpath!r} is not <service folder>/<file>; refused")
        datasets.confined_path(cache_root() / head, rest)

    @property
    def path(self) -> Path:
        """Where the result is (or will be) in the cache (never outside it)."""
        return datasets.confined_path(cache_root(), self.relpath)

    @property
    def record(self) -> Path:
        """The JSON file recording the query beside the result."""
        return self.path.with_name(self.path.name + ".json")

    @property
    def part(self) -> Path:
        """Where an unfinished download is written; never read as a result."""
        return self.path.with_name(self.path.name + ".part")

    def mirror_path(self) -> Path | None:
        """The same relative path inside the offline mirror, if that file exists."""
        mirror = datasets.mirror_dir()
        if mirror is None:
            return None
        candidate = datasets.confined_path(mirror / "archive", self.relpath)
        return candidate if candidate.exists() else None

    def find(self) -> Path | None:
        """The cached (or mirrored) result, or None when it must be fetched."""
        if self.path.exists():
            return self.path
        return self.mirror_path()

    def commit(self, tmp: Path, **info: Any) -> Path:
        """Move a complete, checked ``tmp`` file into place and write the JSON record."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "service": self.service,
            "query": self.query,
            "file": self.path.name,
            "bytes": tmp.stat().st_size,
            "sha256": datasets.sha256sum(tmp),
            "retrieved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **info,
        }
        os.replace(tmp, self.path)
        _atomic_write_text(self.record, json.dumps(record, indent=1, default=str) + "\n")
        return self.path

    def unavailable(self, what: str, *, manual: str = "") -> ArchiveUnavailableError:
        """The error raised offline: what was needed and the two ways to provide it."""
        mirror = datasets.mirror_dir()
        where = f"{mirror / 'archive' / self.relpath}" if mirror else f"$MDSLAM_DATA_MIRROR/archive/{self.relpath}"
        extra = f"\n  or download it by hand: {manual}" if manual else ""
        return ArchiveUnavailableError(
            f"{self.service}: {what} is not cached and the network is off (MDSLAM_ARCHIVE_OFFLINE) "
            f"or unreachable.\n  needed: {_short(self.query, 2000)}\n"
            f"  provide it by placing the result at {self.path}\n"
            f"  or by setting {datasets.MIRROR_ENV} to a directory holding {where}{extra}",
            service=self.service, query=self.query,
        )

    def hint(self) -> str:
        """One line for :func:`with_retries`: where a manually obtained result must go."""
        return (f"Offline? Place the result at {self.path} or set {datasets.MIRROR_ENV} to a "
                f"directory holding archive/{self.relpath}.")


@contextlib.contextmanager
def _quiet_astropy() -> Iterator[None]:
    """Silence VOTable/unit warnings of archive replies (they are the archive's, not ours)."""
    import warnings

    from astropy.io.votable.exceptions import VOWarning
    from astropy.units import UnitsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VOWarning)
        warnings.simplefilter("ignore", UnitsWarning)
        yield


# --------------------------------------------------------------------------- #
# downloads: streamed, resumable, atomic
# --------------------------------------------------------------------------- #
def _content_range_total(value: str | None) -> int | None:
    m = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", value or "")
    if not m or m.group(3) == "*":
        return None
    return int(m.group(3))


def _looks_like(path: Path, kind: str | None) -> bool:
    if kind is None:
        return True
    with open(path, "rb") as fh:
        head = fh.read(80)
    if head[:2] == b"\x1f\x8b":
        return True  # gzip: the size check already stood guard
    if kind == "fits":
        return head.startswith(b"SIMPLE  =")
    return True


def _download_once(url: str, part: Path, net: Settings, progress: bool, desc: str,
                   session) -> dict[str, Any]:
    """One HTTP attempt: resume ``part`` with a Range request if it exists; raise on short bodies.

    ``session`` (:func:`http_session`) retries what fails before the body
    starts; a body that stops short raises a transient error for the caller's
    :func:`with_retries`, which resumes it."""
    import requests
    from tqdm.auto import tqdm

    def spent(exc: Exception) -> Exception:
        # the session's Retry has already retried this (connection, timeout, 5xx): final
        kind = classify(exc)
        if isinstance(kind, _Transient):
            kind.spent = True
        return kind

    meta_path = part.with_name(part.name + ".json")
    have = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    validators: dict[str, str] = {}
    if have and meta_path.exists():
        validators = json.loads(meta_path.read_text())
    if have:
        headers["Range"] = f"bytes={have}-"
        if validators.get("etag") or validators.get("last_modified"):
            headers["If-Range"] = validators.get("etag") or validators["last_modified"]
    try:
        response = session.get(url, headers=headers, stream=True,
                               timeout=(min(net.timeout, 30.0), net.timeout))
    except requests.RequestException as exc:
        raise spent(exc) from exc
    with response as r:
        if r.status_code == 416 and have:
            # the partial file is not a prefix the server recognises: start again
            part.unlink()
            meta_path.unlink(missing_ok=True)
            raise _Transient("server refused to resume (HTTP 416); restarting the download")
        if r.status_code >= 400:
            body = r.text[:2000] if r.headers.get("Content-Type", "").startswith(("text", "application/xml")) else ""
            r.reason = f"{r.reason} {_short(body)}".strip()
            try:
                r.raise_for_status()
            except requests.HTTPError as exc:
                raise spent(exc) from exc
        if r.status_code == 206:
            total = _content_range_total(r.headers.get("Content-Range"))
            mode = "ab"
        else:  # 200: the server sends everything (it ignored the Range, or nothing was there)
            have = 0
            total = int(r.headers["Content-Length"]) if "Content-Length" in r.headers else None
            mode = "wb"
        validators = {k: v for k, v in (("etag", r.headers.get("ETag")),
                                        ("last_modified", r.headers.get("Last-Modified"))) if v}
        part.parent.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(validators))
        # keep what arrives even if the connection drops early: the size check below decides,
        # and the bytes received are the start of the next attempt's Range request
        r.raw.enforce_content_length = False
        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=desc, disable=not progress, leave=False)
        try:
            with open(part, mode) as fh:
                # raw bytes as sent (a server that labels a .gz file "Content-Encoding: gzip"
                # must not get it unpacked under a .gz name), written as they arrive (read1),
                # so a stall or a reset loses nothing already received
                read = getattr(r.raw, "read1", r.raw.read)
                while block := read(1 << 16, decode_content=False):
                    fh.write(block)
                    bar.update(len(block))
        finally:
            bar.close()
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Transient(f"download of {url} stopped at {size} of {total} bytes")
    return {"bytes_expected": total, **validators}


def download(
    url: str,
    entry: CacheEntry,
    *,
    net: Settings,
    progress: bool = True,
    sha256: str | None = None,
    kind: str | None = None,
    what: str = "download",
) -> Path:
    """Fetch ``url`` into ``entry`` (cache hit: no request), resuming partial downloads.

    The file is streamed to ``<name>.part`` (HTTP Range resumes it after an
    interruption; ``If-Range`` restarts it if the remote file changed), its size
    is checked against ``Content-Length``/``Content-Range``, its sha256 against
    ``sha256`` when given and its first bytes against ``kind`` (``"fits"``),
    and only then renamed into the cache, so a truncated file is never a
    cache entry.

    Returns
    -------
    Path
        The local file (cache or mirror).
    """
    found = entry.find()
    if found is not None:
        return found
    if net.offline:
        raise entry.unavailable(what, manual=url)

    session = http_session(net)

    def attempt() -> dict[str, Any]:
        info = _download_once(url, entry.part, net, progress, desc=Path(entry.relpath).name,
                              session=session)
        if sha256 is not None:
            digest = datasets.sha256sum(entry.part)
            if digest != sha256:
                entry.part.unlink()
                raise _Transient(f"sha256 of the download is {digest}, expected {sha256}")
        if not _looks_like(entry.part, kind):
            entry.part.unlink()
            raise _Permanent(f"{url} did not return a {kind} file (an error page?)")
        return info

    with session:
        info = with_retries(attempt, service=entry.service, query=url, what=what, net=net,
                            hint=entry.hint())
    entry.part.with_name(entry.part.name + ".json").unlink(missing_ok=True)
    return entry.commit(entry.part, url=url, **info)
