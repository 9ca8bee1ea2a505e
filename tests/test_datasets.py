"""The dataset registry: mirror, cache, checksums and clear errors."""

from __future__ import annotations

import functools
import http.server
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


def test_offline_without_mirror_or_cache_names_dataset_url_and_variable(tmp_path, monkeypatch):
    import pooch

    def offline(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(pooch, "retrieve", offline)
    monkeypatch.setenv(datasets.MIRROR_ENV, str(tmp_path / "empty-mirror"))
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(datasets.DatasetUnavailableError) as err:
        datasets.fetch("mann2015")
    msg = str(err.value)
    assert "mann2015" in msg and "cdsarc" in msg and datasets.MIRROR_ENV in msg


def test_dataset_without_url_says_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.MIRROR_ENV, str(tmp_path / "empty-mirror"))
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(datasets.DatasetUnavailableError, match="templates_bochanski2007.*MDSLAM_DATA_MIRROR"):
        datasets.fetch("templates_bochanski2007")


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
