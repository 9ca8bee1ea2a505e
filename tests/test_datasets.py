"""The dataset registry: mirror, cache, checksums and clear errors."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

from mdslam import cli, datasets

MIRROR = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_mirror = pytest.mark.skipif(not MIRROR.exists(), reason=f"offline data mirror not found at {MIRROR}")


@pytest.fixture
def mirror(monkeypatch):
    monkeypatch.setenv(datasets.MIRROR_ENV, str(MIRROR))
    return MIRROR


@needs_mirror
def test_every_dataset_is_found_and_verified(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))
    sums = {}
    for line in (MIRROR / "SHA256SUMS").read_text().splitlines():
        sha, rel = line.split()
        sums[rel.removeprefix("./")] = sha
    registered = {}
    for name in datasets.names():
        ds = datasets.get(name)
        paths = datasets.fetch(name)
        assert len(paths) == len(ds.files)
        assert all(p.exists() for p in paths)
        registered.update(ds.files)
    # every file of the mirror is registered, with the mirror's own checksum
    for rel, sha in sums.items():
        assert registered.get(rel) == sha, rel
    # nothing was copied into the cache: the mirror served everything
    assert not (tmp_path / "cache").exists()


@needs_mirror
@pytest.mark.parametrize(
    "name, nrows, column",
    [
        ("birky2020_table6_full", 14828, "APOGEE_ID"),
        ("birky2020_table6_safe", 5875, "APOGEE_ID"),
        ("mann2015", 183, "Teff"),
        ("occam_member_dr16", 10063, "CLUSTER"),
        ("occam_member_dr17", 26699, "FE_H"),
        ("hyades_gaia2018_members", 515, "Source"),
        ("hyades_candidates_gaiadr2_2mass", 786, "RAJ2000"),
        ("carmenes_cif20", 2483, "Karmn"),
        ("carmenes_cif03", 2634, "ID_system"),
        ("lamost_dr7_labels", 54, "file_name"),
        ("gaiaxp_apogee", 40226, "gaiaedr3_source_id"),
    ],
)
def test_tables_load_with_their_published_sizes(mirror, name, nrows, column):
    tab = datasets.load(name)
    assert len(tab) == nrows
    assert column in tab.colnames
    assert tab.meta["dataset"] == name


@needs_mirror
def test_vizier_tables_keep_ids_and_units(mirror):
    hy = datasets.load("hyades_gaia2018_members")
    assert hy["Source"].dtype.kind == "i"  # Gaia DR2 source_id exact, not float-rounded
    assert str(hy["plx"].unit) == "mas"
    # the Hyades are at ~47 pc: parallaxes around 21 mas
    assert 18 < float(hy["plx"].mean()) < 25
    cone = datasets.load("hyades_gaiadr2_cone_full")
    assert cone["Source"].dtype.kind == "i"
    assert {"Plx", "pmRA", "pmDE", "BP-RP"} <= set(cone.colnames)


@needs_mirror
def test_templates_are_increasing_wavelength_tables(mirror):
    tmpl = datasets.load("templates_bochanski2007")
    assert len(tmpl) == 10
    for tab in tmpl.values():
        w = tab["wave"]
        assert (w[1:] > w[:-1]).all()
        assert w.min() < 4000 and w.max() > 9000


def _mirror_copy(tmp_path: Path, rel: str) -> Path:
    dest = tmp_path / "mirror" / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(MIRROR / rel, dest)
    return dest


@needs_mirror
def test_checksum_mismatch_is_an_error(tmp_path, monkeypatch):
    rel = "lamost_dr7_mdwarfs/labels.csv"
    dest = _mirror_copy(tmp_path, rel)
    dest.write_bytes(dest.read_bytes().replace(b"3861.0", b"3862.0", 1))
    monkeypatch.setenv(datasets.MIRROR_ENV, str(tmp_path / "mirror"))
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(datasets.ChecksumError, match="lamost_dr7_labels.*labels.csv"):
        datasets.load("lamost_dr7_labels")


def test_a_directory_where_the_file_should_be_is_a_one_line_error(tmp_path, monkeypatch):
    rel = "lamost_dr7_mdwarfs/labels.csv"
    (tmp_path / "mirror" / rel).mkdir(parents=True)
    monkeypatch.setenv(datasets.MIRROR_ENV, str(tmp_path / "mirror"))
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(datasets.DatasetError, match="lamost_dr7_labels.*labels.csv is a directory"):
        datasets.load("lamost_dr7_labels")


def test_offline_without_mirror_or_cache_names_dataset_url_and_variable(tmp_path, monkeypatch):
    import pooch

    def offline(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(pooch, "retrieve", offline)
    monkeypatch.setenv(datasets.MIRROR_ENV, str(tmp_path / "empty-mirror"))
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(datasets.DatasetUnavailableError) as err:
        datasets.fetch("carmenes_cif20")
    msg = str(err.value)
    assert "carmenes_cif20" in msg and "CARMENES-V/808f5ddd" in msg and datasets.MIRROR_ENV in msg


def test_dataset_without_url_says_how_to_provide_it(tmp_path, monkeypatch):
    """mann2015 has no online copy of its exact bytes: the error says how to get it, never a URL."""
    monkeypatch.setenv(datasets.MIRROR_ENV, str(tmp_path / "empty-mirror"))
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))
    assert datasets.get("mann2015").urls == {}
    with pytest.raises(datasets.DatasetUnavailableError) as err:
        datasets.fetch("mann2015")
    msg = str(err.value)
    assert "mann2015" in msg and "MDSLAM_DATA_MIRROR" in msg
    assert "machine-readable table" in msg and "804/1/64" in msg
    assert str(tmp_path / "cache" / "catalogs" / "mann2015_tables5-7_cds.txt") in msg


@pytest.fixture
def local_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_goes_through_pooch_into_the_cache_and_is_reused(tmp_path, monkeypatch, local_server):
    root, base = local_server
    payload = b"name,teff\nGJ 1,3500\n"
    (root / "tiny.csv").write_bytes(payload)
    import hashlib

    sha = hashlib.sha256(payload).hexdigest()
    ds = datasets.Dataset(
        name="tiny_test", description="test", files={"test/tiny.csv": sha},
        urls={"test/tiny.csv": f"{base}/tiny.csv"}, source="local", citation="-", license="-",
        loader=datasets._read_csv,
    )
    monkeypatch.setitem(datasets.REGISTRY, "tiny_test", ds)
    monkeypatch.setenv(datasets.MIRROR_ENV, str(tmp_path / "empty-mirror"))
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))
    tab = datasets.load("tiny_test")
    assert list(tab["teff"]) == [3500]
    cached = tmp_path / "cache" / "test" / "tiny.csv"
    assert cached.read_bytes() == payload
    # a second fetch is served from the cache even when the server has lost the file
    (root / "tiny.csv").unlink()
    assert datasets.fetch("tiny_test") == [cached]


def test_download_with_wrong_checksum_is_refused(tmp_path, monkeypatch, local_server):
    root, base = local_server
    (root / "bad.csv").write_bytes(b"a,b\n1,2\n")
    ds = datasets.Dataset(
        name="bad_test", description="test", files={"test/bad.csv": "0" * 64},
        urls={"test/bad.csv": f"{base}/bad.csv"}, source="local", citation="-", license="-",
    )
    monkeypatch.setitem(datasets.REGISTRY, "bad_test", ds)
    monkeypatch.setenv(datasets.MIRROR_ENV, str(tmp_path / "empty-mirror"))
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(datasets.ChecksumError, match="bad_test"):
        datasets.fetch("bad_test")
    assert not (tmp_path / "cache" / "test" / "bad.csv").exists()


def test_unknown_dataset_lists_known_names():
    with pytest.raises(KeyError, match="birky2020_table6_full"):
        datasets.get("no_such_data")


def test_registry_markdown_lists_every_dataset_with_citation():
    md = datasets.registry_markdown()
    for ds in datasets.REGISTRY.values():
        assert f"`{ds.name}`" in md
        assert ds.citation in md


@needs_mirror
def test_cli_data_list_and_fetch(mirror, capsys):
    assert cli.main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "birky2020_table6_full" in out and "gaiaxp_apogee" in out
    assert cli.main(["data", "fetch", "mann2015"]) == 0
    assert "mann2015: 1 file(s) verified" in capsys.readouterr().out
    assert cli.main(["data", "fetch", "nope"]) == 1
    assert "unknown dataset" in capsys.readouterr().err


# --------------------------------------------------------------------------- #
# the registry file and its URLs
# --------------------------------------------------------------------------- #
def _sha256sums() -> dict[str, str]:
    sums = {}
    for line in (MIRROR / "SHA256SUMS").read_text().splitlines():
        sha, rel = line.split()
        sums[rel.removeprefix("./")] = sha
    return sums


@needs_mirror
def test_registry_file_entries_parse_and_match_the_mirror_checksums():
    """Every entry of the package's registry.json parses, and every mirror file is registered
    with the sha256 that SHA256SUMS (written when the mirror was made) gives it."""
    from importlib.resources import files

    text = files("mdslam").joinpath(datasets.REGISTRY_FILE).read_text()
    parsed = datasets.read_registry(text)
    assert list(parsed) == datasets.names()
    registered = {rel: sha for ds in parsed.values() for rel, sha in ds.files.items()}
    sums = _sha256sums()
    assert len(sums) == 142
    for rel, sha in sums.items():
        assert registered[rel] == sha, rel
    # the files not in the mirror are the three shipped inside installed packages
    assert {rel for rel in registered if rel not in sums} == {
        rel for ds in parsed.values() if ds.package for rel in ds.files}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"sha256": "abc"}, "no valid sha256"),
        ({"sha256": "0" * 64, "path": "../../etc/passwd"}, "outside"),
        ({"sha256": "0" * 64, "path": "/etc/passwd"}, "not a relative path"),
        ({"sha256": "0" * 64, "loader": "pickle"}, "unknown loader 'pickle'"),
    ],
)
def test_registry_file_errors_name_the_dataset_and_the_problem(bad, message):
    import json

    path = bad.pop("path", "x/y.csv")
    entry = {"name": "broken", "description": "d", "source": "s", "citation": "c", "license": "l",
             "loader": bad.pop("loader", "csv"), "files": {path: {"sha256": bad["sha256"], "url": None}}}
    with pytest.raises(datasets.DatasetError, match=f"registry.json: dataset 'broken'.*{message}"):
        datasets.read_registry(json.dumps({"format": 1, "datasets": [entry]}), where="registry.json")


def test_registry_file_rejects_duplicates_and_unknown_formats():
    import json

    entry = {"name": "twice", "description": "d", "source": "s", "citation": "c", "license": "l",
             "files": {"a.csv": {"sha256": "0" * 64}}}
    with pytest.raises(datasets.DatasetError, match="'twice' is declared twice"):
        datasets.read_registry(json.dumps({"format": 1, "datasets": [entry, entry]}))
    with pytest.raises(datasets.DatasetError, match="unknown registry format 2"):
        datasets.read_registry(json.dumps({"format": 2, "datasets": []}))


def test_registered_urls_are_pinned_to_commits_never_branches():
    """A URL that follows a branch can change under its checksum: every GitHub URL carries a
    40-hex commit id, and no URL names main/master/HEAD or a live query."""
    import re

    raw = re.compile(r"^https://raw\.githubusercontent\.com/[^/]+/[^/]+/([0-9a-f]{40})/.+")
    n_github = 0
    for ds in datasets.REGISTRY.values():
        for url in ds.urls.values():
            parts = url.split("/")
            assert not {"main", "master", "HEAD", "refs"} & set(parts), url
            assert "?" not in url, f"{ds.name}: {url} is a query, not a fixed file"
            if "github" in url:
                assert raw.match(url), url
                n_github += 1
            assert url.startswith("https://"), url
    # 54 LAMOST spectra + 2 LAMOST tables + 5 B20 + 3 Hyades + 2 CARMENES + 9 literature
    # + 62 templates + 1 BOSS spectrum
    assert n_github == 138


def test_the_formerly_wrong_urls_now_name_the_verified_sources():
    """The sources listed as verified byte-identical in the mirror's README."""
    def url(name):
        (u,) = datasets.get(name).urls.values()
        return u

    carm = "ccifuentesr/CARMENES-V/808f5ddd1e2e7a145c990bfc478ba4c2302c6cf6/"
    assert url("carmenes_cif20").endswith(carm + "cif20.Mother.v01.csv")
    assert url("literature_mann15_stars").endswith(carm + "Literature/mann15.stars.csv")
    assert url("hyades_candidates_gaiadr2_2mass").endswith(
        "Hyades_C13/3bc71533900d834dbad95e7e59314491c7d89bf9/Gaia_Comb_Table.csv")
    assert url("hyades_gaia2018_members").endswith(
        "Hyades_C13/5a53e257c921a3803622517c79169f597c90ff9b/gaia_HRD_Hyades.tsv")
    tmpl = datasets.get("templates_subdwarfs")
    assert len(tmpl.urls) == len(tmpl.files) == 52
    assert all("kastredux/b36d465a3730db6c9b2389fa041eb17109dd27bd/src/kastredux/resources/spectral_standards/"
               in u for u in tmpl.urls.values())


@needs_mirror
def test_vizier_reader_gives_the_numbers_written_in_the_file(mirror):
    """astropy's reader of the VizieR '|' table against the first data row read by eye:
    ``064.8746100|+21.7537200|     49520255665123328|Hyades  |...|12.861|20.866| 0.033|...``."""
    hy = datasets.load("hyades_gaia2018_members")
    row = hy[0]
    assert int(row["Source"]) == 49520255665123328
    assert row["Cluster"] == "Hyades"
    assert (float(row["Gmag"]), float(row["plx"]), float(row["e_plx"])) == (12.861, 20.866, 0.033)
    assert str(hy["_RAJ2000"].unit) == "deg" and str(hy["Gmag"].unit) == "mag"
    cone = datasets.load("hyades_gaiadr2_cone_full")
    assert len(cone) == 999
    assert int(cone["Source"][0]) == 3312744219987686144 and float(cone["Plx"][0]) == 20.8354


def test_vizier_reader_refuses_a_file_without_its_header_block(tmp_path):
    bad = tmp_path / "x.tsv"
    bad.write_text("#comment\na|b\n1|2\n")
    with pytest.raises(datasets.DatasetError, match="x.tsv: not a VizieR ASCII table"):
        datasets._read_vizier_tsv([bad])


# --------------------------------------------------------------------------- #
# verify (offline against the mirror; online against the URLs)
# --------------------------------------------------------------------------- #
@needs_mirror
def test_verify_offline_reports_each_file_and_carries_on(tmp_path, monkeypatch, capsys):
    rel_bad = "lamost_dr7_mdwarfs/labels.csv"
    bad = _mirror_copy(tmp_path, rel_bad)
    bad.write_bytes(bad.read_bytes() + b"\n")
    _mirror_copy(tmp_path, "lamost_dr7_mdwarfs/literature_reference_409.csv")
    monkeypatch.setenv(datasets.MIRROR_ENV, str(tmp_path / "mirror"))
    rows = datasets.verify(["lamost_dr7_labels", "lamost_literature_409", "carmenes_cif20"])
    status = {r[0]: r[2] for r in rows}
    assert status == {"lamost_dr7_labels": "mismatch", "lamost_literature_409": "ok", "carmenes_cif20": "missing"}
    assert cli.main(["data", "verify", "lamost_dr7_labels", "lamost_literature_409"]) == 1
    out = capsys.readouterr()
    assert "mismatch lamost_dr7_labels" in out.out and "1 of 2 file(s) failed" in out.err


@needs_mirror
def test_cli_data_verify_whole_mirror_is_clean(mirror, capsys):
    assert cli.main(["data", "verify", "birky2020_table6_full", "templates_bochanski2007"]) == 0
    assert "11 of 11 file(s) ok" in capsys.readouterr().out


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("MDSLAM_NETWORK_TESTS") != "1",
                    reason="downloads every registered file: set MDSLAM_NETWORK_TESTS=1 to run it")
def test_verify_online_every_registered_url_serves_the_registered_bytes():
    """Downloads every registered file from its URL (never run in CI)."""
    rows = datasets.verify(online=True)
    failed = [r for r in rows if r[2] not in ("ok", "missing")]
    assert not failed, failed


# --------------------------------------------------------------------------- #
# cache security
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/etc/passwd", "", "a/\x00b", "C:/x", "..\\..\\x", "."])
def test_confined_path_refuses_paths_outside_the_root(tmp_path, rel):
    with pytest.raises(datasets.UnsafePathError, match="refused|not a relative path"):
        datasets.confined_path(tmp_path / "root", rel)


def test_confined_path_normalises_paths_inside_the_root(tmp_path):
    root = tmp_path / "root"
    assert datasets.confined_path(root, "a/./b/../c.fits") == root / "a" / "c.fits"
    assert datasets.confined_path(root, "a/b.fits") == root / "a" / "b.fits"


@needs_mirror
def test_file_altered_with_its_mtime_restored_is_hashed_again(tmp_path, monkeypatch):
    import os
    import time

    rel = "lamost_dr7_mdwarfs/labels.csv"
    dest = _mirror_copy(tmp_path, rel)
    monkeypatch.setenv(datasets.MIRROR_ENV, str(tmp_path / "mirror"))
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))
    assert datasets.fetch("lamost_dr7_labels") == [dest]  # verified and remembered
    st = dest.stat()
    time.sleep(0.05)  # let the clock move past the status-change time of the copy
    data = dest.read_bytes()
    with open(dest, "r+b") as fh:  # same inode, same size
        fh.write(data.replace(b"3861.0", b"3862.0", 1))
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (dest.stat().st_ino, dest.stat().st_size, dest.stat().st_mtime_ns) == (
        st.st_ino, st.st_size, st.st_mtime_ns)
    with pytest.raises(datasets.ChecksumError, match="lamost_dr7_labels"):
        datasets.fetch("lamost_dr7_labels")


def test_sha256sum_matches_hashlib(tmp_path):
    import hashlib

    f = tmp_path / "f.bin"
    f.write_bytes(b"mdslam" * 1000)
    assert datasets.sha256sum(f) == hashlib.sha256(b"mdslam" * 1000).hexdigest()
