"""The book machinery: chapters execute with papermill parameters, failures are named,
the data page comes from the registry, and the rendered pages load in a browser.

The chapter test runs the real chapter 01 on the data mirror (``MDSLAM_DATA_MIRROR``).
The browser test (marker ``browser``) needs headless Chromium + chromedriver
(Debian: ``apt-get install chromium chromium-driver``) and selenium; it checks the
book in ``MDSLAM_BOOK_HTML`` (default: builds it with ``mdslam book --only 01``). It
skips without a browser, unless ``MDSLAM_REQUIRE_BROWSER=1`` (CI), where it fails.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import textwrap
import threading
from pathlib import Path

import pytest

from mdslam import book, datasets

ROOT = Path(__file__).resolve().parents[1]
COMMON_PARAMETERS = {"track", "data_mode", "n_max", "seed"}


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _toy_book(root: Path, chapter_body: str) -> Path:
    """A minimal repository layout with one chapter whose code is ``chapter_body``."""
    (root / "book").mkdir(parents=True)
    (root / "notebooks").mkdir()
    (root / "_config.yml").write_text('title: toy\nexecute:\n  execute_notebooks: "off"\n')
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n  - caption: Chapters\n    chapters:\n"
        "      - file: notebooks/01_toy\n      - file: notebooks/02_other\n"
    )
    (root / "book" / "intro.md").write_text("# Toy\n")
    header = textwrap.dedent(
        """\
        ---
        jupytext:
          text_representation:
            extension: .md
            format_name: myst
        kernelspec:
          display_name: Python 3
          language: python
          name: python3
        ---
        # Toy chapter

        ```{code-cell} ipython3
        :tags: [parameters]
        track = "catalogs"
        n_max = None
        ```
        """
    )
    (root / "notebooks" / "01_toy.md").write_text(header + f"\n```{{code-cell}} ipython3\n{chapter_body}\n```\n")
    (root / "notebooks" / "02_other.md").write_text(header)
    return root


def _has_mirror() -> bool:
    m = datasets.mirror_dir()
    return m is not None and (m / "catalogs" / "birky2020_table6_full.csv.gz").exists()


# --------------------------------------------------------------------------- #
# layout and configuration
# --------------------------------------------------------------------------- #
def test_parse_value():
    assert book.parse_value("200") == 200
    assert book.parse_value("1.2") == 1.2
    assert book.parse_value("None") is None and book.parse_value("null") is None
    assert book.parse_value("true") is True
    assert book.parse_value("lamost") == "lamost"
    assert book.parse_value("'a b'") == "a b"


def test_chapters_follow_toc_and_declare_common_parameters(tmp_path):
    """Every chapter of _toc.yml exists as MyST markdown and declares the parameters
    every chapter must accept (DESIGN.md): track, data_mode, n_max, seed."""
    chapters = book.chapters(ROOT)
    assert chapters and chapters[0].number == "01"
    assert [c.number for c in chapters] == sorted(c.number for c in chapters)
    for ch in chapters:
        nb = book.to_notebook(ch.source, tmp_path / f"{ch.name}.ipynb")
        declared = book.declared_parameters(nb)
        missing = COMMON_PARAMETERS - set(declared)
        assert not missing, f"chapter {ch.number} lacks parameters {sorted(missing)}"
        assert declared["data_mode"].strip("'\"") == "offline"


def test_select_chapters():
    chapters = book.chapters(ROOT)
    assert book.select_chapters(chapters, ["1"]) == [chapters[0]]
    assert book.select_chapters(chapters, None) == chapters
    with pytest.raises(book.BookError, match="no such chapter"):
        book.select_chapters(chapters, ["99"])


def test_data_page_is_generated_from_registry():
    template = (ROOT / "book" / "data.md").read_text()
    page = book.data_page(template)
    assert book.REGISTRY_MARKER not in page
    for name in datasets.names():
        assert f"`{name}`" in page
    with pytest.raises(book.BookError, match="registry-table"):
        book.data_page("# Data\n")


def test_stage_keeps_only_fresh_chapters(tmp_path):
    root = _toy_book(tmp_path / "repo", "x = 1")
    chapters = book.chapters(root)
    toc = book._filter_toc(book.read_toc(root), {chapters[0].docname})
    assert book.toc_files(toc) == ["book/intro", "notebooks/01_toy"]
    assert not book.is_fresh(chapters[0], root)


# --------------------------------------------------------------------------- #
# execution
# --------------------------------------------------------------------------- #
def test_failing_chapter_is_named_and_nothing_renders(tmp_path):
    root = _toy_book(tmp_path / "repo", 'raise ValueError("bad cut")')
    with pytest.raises(book.ChapterError) as info:
        book.build(root, only=["01"], echo=lambda *a: None)
    msg = str(info.value)
    assert "chapter 01" in msg and "ValueError: bad cut" in msg
    assert not (root / "_build" / "html").exists()
    out = root / book.EXECUTED_DIR / "01_toy.failed.ipynb"
    assert out.exists()  # the traceback is kept for the reader
    assert not (root / book.EXECUTED_DIR / "01_toy.ipynb").exists()
    assert not book.is_fresh(book.chapters(root)[0], root)


def test_a_failed_run_keeps_the_previous_good_copy(tmp_path):
    root = _toy_book(tmp_path / "repo", "x = 1")
    ch = book.chapters(root)[0]
    good = book.execute_chapter(ch, root, {})
    assert good.ok and book.is_fresh(ch, root)
    before = good.output.read_bytes()
    (root / "notebooks" / "01_toy.md").write_text(
        (root / "notebooks" / "01_toy.md").read_text().replace("x = 1", 'raise ValueError("bad")'))
    bad = book.execute_chapter(ch, root, {})
    assert not bad.ok and bad.output.name == "01_toy.failed.ipynb"
    assert good.output.read_bytes() == before


def test_a_copy_made_with_other_parameters_is_not_fresh(tmp_path):
    root = _toy_book(tmp_path / "repo", "x = 1")
    ch = book.chapters(root)[0]
    assert book.execute_chapter(ch, root, {"n_max": 3}).ok
    assert not book.is_fresh(ch, root)
    assert book.is_fresh(ch, root, {"n_max": 3})


@pytest.mark.parametrize("params, match", [
    ({"n_max": -1}, r"-p n_max -1: -1 is outside its range \[1, inf\)"),
    ({"n_max": "abc"}, r"-p n_max 'abc'"),
    ({"track": 3}, r"-p track 3: expects str"),
])
def test_bad_parameter_values_are_refused_before_running(tmp_path, params, match):
    root = _toy_book(tmp_path / "repo", "x = 1")
    with pytest.raises(book.BookError, match=match):
        book.execute(root, only=["01"], parameters=params, echo=lambda *a: None)
    assert not (root / book.EXECUTED_DIR / "01_toy.ipynb").exists()


def test_documented_ranges_of_chapter_01_are_enforced(tmp_path):
    ch = book.select_chapters(book.chapters(ROOT), ["01"])[0]
    specs = book.parameter_specs(book.to_notebook(ch.source, tmp_path / "01.ipynb"))
    assert specs["ruwe_max"].check(-1.0) and "range (0, inf)" in specs["ruwe_max"].check(-1.0)
    assert specs["ruwe_max"].check(1.2) is None and specs["ruwe_max"].check(2) is None
    assert "one of 'catalogs', 'xp'" in specs["track"].check("lamost")
    assert specs["data_mode"].check("online")


def test_book_outside_a_repository_is_refused(tmp_path, monkeypatch, capsys):
    from mdslam import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["book", "--no-render"]) == 1
    err = capsys.readouterr().err
    assert "no book here" in err and "--root" in err
    assert not (tmp_path / "_build").exists()


def test_unknown_parameter_is_refused(tmp_path):
    root = _toy_book(tmp_path / "repo", "x = 1")
    with pytest.raises(book.BookError, match="ruwe_mx"):
        book.execute(root, only=["01"], parameters={"ruwe_mx": 1.2}, echo=lambda *a: None)


def test_cli_book_reports_failure(tmp_path, capsys):
    from mdslam import cli

    root = _toy_book(tmp_path / "repo", "1 / 0")
    status = cli.main(["book", "--root", str(root), "--only", "01", "--no-render"])
    assert status == 1
    assert "chapter 01" in capsys.readouterr().err


@pytest.mark.skipif(not _has_mirror(), reason="needs the data mirror (MDSLAM_DATA_MIRROR)")
def test_chapter01_runs_with_non_default_parameter(tmp_path):
    """Chapter 01 through papermill: a stricter RUWE cut keeps fewer CARMENES stars, and the
    injected value is what the chapter used."""
    ch = book.select_chapters(book.chapters(ROOT), ["01"])[0]
    default = book.execute_chapter(ch, ROOT, {}, output=tmp_path / "default.ipynb")
    strict = book.execute_chapter(ch, ROOT, {"ruwe_max": 1.2, "n_max": 1500},
                                  output=tmp_path / "strict.ipynb")
    assert default.ok, default.error
    assert strict.ok, strict.error
    g0 = book.glued_values(default.output)
    g1 = book.glued_values(strict.output)
    assert g0["ruwe_max"] == 1.4 and g1["ruwe_max"] == 1.2
    assert g1["n_input_carmenes"] == 1500 < g0["n_input_carmenes"]
    # a stricter cut cannot keep more stars, and on real CARMENES data it removes some
    assert g1["removed_ruwe_carmenes"] > 0
    assert g1["frac_ruwe_carmenes"] < g0["frac_ruwe_carmenes"]
    # provenance recorded for the reader
    import nbformat

    meta = nbformat.read(strict.output, as_version=4).metadata["mdslam"]
    assert meta["parameters"] == {"ruwe_max": 1.2, "n_max": 1500}
    assert meta["status"] == "ok"


# --------------------------------------------------------------------------- #
# the rendered book in a browser
# --------------------------------------------------------------------------- #
def _chromium() -> tuple[str, str] | None:
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def book_html() -> Path:
    env = os.environ.get("MDSLAM_BOOK_HTML")
    if env:
        html = Path(env)
        if not (html / "index.html").exists():
            pytest.fail(f"MDSLAM_BOOK_HTML={env} holds no index.html: run `mdslam book` first")
        return html
    if not _has_mirror():
        pytest.skip("no MDSLAM_BOOK_HTML and no data mirror to build the book with")
    return book.build(ROOT, only=["01"], echo=lambda *a: None)


def _no_browser(reason: str) -> None:
    """Skip, or fail where a browser is required (CI sets MDSLAM_REQUIRE_BROWSER=1)."""
    if os.environ.get("MDSLAM_REQUIRE_BROWSER") == "1":
        pytest.fail(f"MDSLAM_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        import selenium  # noqa: F401
    except ImportError:
        _no_browser("selenium is not installed (pip install selenium)")
    found = _chromium()
    if found is None:
        _no_browser("no headless Chromium + chromedriver installed "
                    "(Debian: apt-get install chromium chromium-driver)")
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    profile = tempfile.mkdtemp(prefix="mdslam-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def server(book_html):
    handler = functools.partial(_QuietHandler, directory=str(book_html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


_PAGE_STATE = """
const imgs = Array.from(document.images);
return {
  ready: document.readyState,
  images: imgs.map(i => ({src: i.currentSrc || i.src, complete: i.complete, width: i.naturalWidth})),
  errors: document.querySelectorAll('[class*="output_error"], [class*="traceback"]').length,
  traceback: document.body.innerText.includes("Traceback"),
  title: document.title,
};
"""


@pytest.mark.browser
def test_every_chapter_renders_with_its_figures(browser, server, book_html):
    import time

    pages = [f"{c.docname}.html" for c in book.chapters(ROOT)]
    missing = [p for p in pages if not (book_html / p).exists()]
    assert not missing, f"chapters missing from the built book: {missing}"
    for page in pages:
        browser.get(f"{server}/{page}")
        deadline = time.time() + 20
        while True:
            state = browser.execute_script(_PAGE_STATE)
            if state["ready"] == "complete" and all(i["complete"] for i in state["images"]):
                break
            assert time.time() < deadline, f"{page}: images still loading: {state['images']}"
            time.sleep(0.2)
        figures = [i for i in state["images"] if "/_images/" in i["src"]]
        broken = [i["src"] for i in state["images"] if i["width"] == 0]
        assert figures, f"{page}: no figure rendered"
        assert not broken, f"{page}: images that did not load: {broken}"
        assert state["errors"] == 0, f"{page}: {state['errors']} error output(s)"
        assert not state["traceback"], f"{page}: a traceback is shown"
    # the data page carries the registry table
    browser.get(f"{server}/book/data.html")
    text = browser.execute_script("return document.body.innerText;")
    for name in ("gaiaxp_apogee", "birky2020_table6_full", "carmenes_cif20"):
        assert name in text


@pytest.mark.skipif(not _has_mirror(), reason="needs the data mirror (MDSLAM_DATA_MIRROR)")
def test_user_guide_commands_rerun_in_a_fresh_directory(tmp_path):
    """The user guide's commands (train, CV skill, predict in process and on Dask, read the
    catalogue, preprocess LAMOST files) run again, small, in a new empty folder."""
    ch = book.select_chapters(book.chapters(ROOT), ["10"])[0]
    work = tmp_path / "guide"
    run = book.execute_chapter(ch, ROOT, {"workdir": str(work), "n_train": 40, "n_new": 12, "cv": 3,
                                          "dask_workers": 1}, output=tmp_path / "guide.ipynb")
    assert run.ok, run.error
    for name in ("my_xp_train.fits", "my_xp_new.fits", "my_labels.csv", "my_model.npz",
                 "new_labels.fits", "new_labels_dask.fits"):
        assert (work / name).is_file(), name
    from mdslam.batch import read_catalogue

    cat = read_catalogue(work / "new_labels.fits")
    assert len(cat) == 12 and {"teff", "logg", "fe_h", "flag"} <= set(cat.colnames)


def test_archive_only_prints_a_command_the_cli_accepts():
    import re
    import shlex

    from mdslam import cli

    text = book.archive_only("02", track="boss")
    assert text.startswith("archive-only: run `")
    command = shlex.split(re.search(r"`(.*)`", text).group(1))
    assert command[:2] == ["mdslam", "book"]
    args = cli.build_parser().parse_args(command[1:])
    assert args.only == ["02"]
    assert dict(args.param) == {"data_mode": "archive", "track": "boss"}


def test_comparison_table_has_a_note_column_when_a_row_has_a_note():
    three = book.comparison_table([("n", "870 (Q25 sec. 2.4)", "712, track xp")]).data.splitlines()
    assert three[0] == "| quantity | paper | here |" and three[2] == "| n | 870 (Q25 sec. 2.4) | 712, track xp |"
    four = book.comparison_table([("n", "870 (Q25 sec. 2.4)", "712, track xp", "seeded split"),
                                  ("a|b", "-", "1")]).data.splitlines()
    assert four[0] == "| quantity | paper (reference) | ours (track, n, cut) | note |"
    assert four[2] == "| n | 870 (Q25 sec. 2.4) | 712, track xp | seeded split |"
    assert four[3] == "| a/b | - | 1 |  |"     # a triple gets an empty note; "|" cannot break a cell
