"""Archive mode (mdslam.archive) against local replay servers: the real astroquery and HTTP code,
real-format replies built from the mirror's real data, no address but 127.0.0.1.

Covered per service: success, cache hit (no request on rerun), timeout, HTTP 500 with the
archive's message surfaced, truncated download (resumed, never cached truncated), a retry that
succeeds after one failure, chunked queries resuming after an interruption, offline errors.
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
    monkeypatch.setenv("MDSLAM_ARCHIVE_TIMEOUT", "10")
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
    assert len(got) == len(pairs)
    lookup = dict(zip(np.asarray(pairs["dr2_source_id"]).tolist(), np.asarray(pairs["dr3_source_id"]).tolist(),
                      strict=True))
    assert all(lookup[int(a)] == int(b) for a, b in zip(got["dr2_source_id"], got["dr3_source_id"], strict=True))


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
    with pytest.raises(archive.ArchiveError, match="table3.*table4|table4.*table3"):
        archive.vizier_catalog("birky2020")
    mann = archive.vizier_catalog("birky2020", table="table4")
    assert len(mann) == 87 and str(mann["ID"][0]).startswith("2M")  # B20's 87 Mann 2015 training stars
    assert set(archive.vizier_tables("J/ApJ/892/31")) == {"J/ApJ/892/31/table3", "J/ApJ/892/31/table4"}


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
