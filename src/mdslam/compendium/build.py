"""Build the compendium: execute every chapter with papermill, then render the book.

The chapters are jupytext MyST markdown files (``notebooks/NN_name.md``, the
source of truth). papermill executes ``.ipynb`` only, so the pipeline, for
each chapter listed in ``_toc.yml`` (in that order):

1. converts the markdown to a notebook with jupytext
   (``_build/executed/NN_name.ipynb``);
2. executes it with papermill, injecting the chapter's parameters (its
   defaults, or the overrides given with ``mdslam book -p NAME VALUE``), in a
   kernel that runs the current Python (``sys.executable``), with the working
   directory set to ``_build/executed/`` (a notebook runs in its own folder,
   as in Jupyter, and nothing it writes lands in the source tree; chapters
   find data through :mod:`mdslam.datasets`, never through relative paths);
3. records in the executed notebook's metadata (``metadata.mdslam``) the
   source file's sha256, the parameters and the run time;

then it stages the book (``_build/book-src/``: the configuration, the
``book/`` pages, the data page generated from the dataset registry and the
executed notebooks) and runs ``jupyter-book build`` on the staging folder with
execution switched off. The HTML lands in ``_build/html/``. The source tree
is never written to.

A chapter that raises stops nothing else from executing, but the book is not
rendered and :func:`build` raises :class:`ChapterError` naming every failed
chapter, the cell and the exception (``mdslam book`` exits non-zero).

The helpers the chapters call (the ``data_mode`` guard, the seeded ``n_max``
draw, provenance and results tables) are in :mod:`mdslam.compendium.chapter`;
they are re-exported here for the chapters written against ``mdslam.book``.

Typical use is the command line (``mdslam book``, ``mdslam book --only 01
-p ruwe_max 1.2``); the functions below are the same steps for scripts and
tests.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BookError",
    "ChapterError",
    "Chapter",
    "ChapterRun",
    "BUILD_DIR",
    "EXECUTED_DIR",
    "STAGING_DIR",
    "KERNEL_NAME",
    "REGISTRY_MARKER",
    "FLAG_MARKER",
    "find_root",
    "read_toc",
    "toc_files",
    "chapters",
    "select_chapters",
    "parse_value",
    "to_notebook",
    "declared_parameters",
    "parameter_specs",
    "check_parameters",
    "ParameterSpec",
    "COMMON_PARAMETER_RULES",
    "kernel",
    "execute_chapter",
    "execute",
    "is_fresh",
    "glued_values",
    "require_data_mode",
    "subsample",
    "training_set",
    "INPUTS",
    "load",
    "provenance",
    "markdown_table",
    "comparison_table",
    "archive_only",
    "data_page",
    "stage",
    "render",
    "build",
]

#: Everything the pipeline writes goes under this folder of the repository.
BUILD_DIR = "_build"
#: Executed chapter notebooks (also the kernel's working directory).
EXECUTED_DIR = f"{BUILD_DIR}/executed"
#: The generated book source handed to ``jupyter-book build``.
STAGING_DIR = f"{BUILD_DIR}/book-src"
#: Name of the kernelspec written for the current Python.
KERNEL_NAME = "mdslam-book"
#: Line of ``book/data.md`` replaced by the registry's Markdown table.
REGISTRY_MARKER = "<!-- mdslam:registry-table -->"
FLAG_MARKER = "<!-- mdslam:flag-table -->"

_CHAPTER_RE = re.compile(r"^notebooks/(\d{2})_[A-Za-z0-9_]+$")


class BookError(RuntimeError):
    """The book cannot be built (layout, configuration or rendering problem)."""


class ChapterError(BookError):
    """One or more chapters raised while executing.

    Parameters
    ----------
    runs
        The failed :class:`ChapterRun` objects; each carries the chapter, the
        cell and the exception text.
    """

    def __init__(self, runs: Sequence[ChapterRun]):
        self.runs = list(runs)
        lines = [f"{len(self.runs)} chapter(s) failed; the book was not rendered:"]
        lines += [f"  {run.summary()}" for run in self.runs]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Chapter:
    """One chapter of the book.

    Parameters
    ----------
    number
        Two-digit chapter number, ``"01"``.
    docname
        The ``_toc.yml`` entry, ``"notebooks/01_data_selection"``.
    source
        Absolute path of the jupytext MyST markdown file.
    """

    number: str
    docname: str
    source: Path

    @property
    def name(self) -> str:
        """File stem, ``"01_data_selection"``."""
        return Path(self.docname).name

    def executed_path(self, root: Path) -> Path:
        """Where the executed notebook of this chapter is written."""
        return Path(root) / EXECUTED_DIR / f"{self.name}.ipynb"


@dataclass
class ChapterRun:
    """The outcome of executing one chapter.

    Attributes
    ----------
    chapter
        The chapter run.
    output
        Path of the executed notebook (written even when the chapter failed,
        with the traceback in the failing cell's output).
    parameters
        The parameters injected by papermill (overrides only; the chapter's
        own defaults apply to the rest).
    seconds
        Wall-clock time of the execution, kernel start included.
    error
        ``None`` on success, else ``"In [n]: ExceptionName: message"``.
    """

    chapter: Chapter
    output: Path
    parameters: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True if the chapter ran without raising."""
        return self.error is None

    def summary(self) -> str:
        """One line: chapter, status, time (and the error)."""
        status = "ok" if self.ok else "FAILED"
        line = f"chapter {self.chapter.number} ({self.chapter.source.name}): {status} in {self.seconds:.1f} s"
        if not self.ok:
            line += f" -- {self.error}; executed copy with the traceback: {self.output}"
        return line


# --------------------------------------------------------------------------- #
# layout
# --------------------------------------------------------------------------- #
def find_root(start: str | os.PathLike | None = None) -> Path:
    """The book's root: the first folder holding ``_config.yml`` and ``_toc.yml``.

    Searched from ``start`` (default: the current directory) upwards. The
    installed package's own location is never used: ``mdslam book`` run
    outside a clone must not write into another copy of the repository.

    Raises
    ------
    BookError
        If no such folder is found (pass ``--root``, or run from a clone).
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        if (folder / "_config.yml").is_file() and (folder / "_toc.yml").is_file():
            return folder
    raise BookError(
        f"no book here: no _config.yml + _toc.yml in {here} or above it; run from a clone of "
        "the mdslam repository or pass --root DIR."
    )


def read_toc(root: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``_toc.yml`` of the book at ``root``."""
    import yaml

    path = Path(root) / "_toc.yml"
    with open(path) as fh:
        toc = yaml.safe_load(fh)
    if not isinstance(toc, dict) or "root" not in toc:
        raise BookError(f"{path}: not a Jupyter Book table of contents (no 'root' key)")
    return toc


def _walk_entries(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "file" in node:
            yield node
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []) or []:
                yield from _walk_entries(child)
    elif isinstance(node, list):
        for child in node:
            yield from _walk_entries(child)


def toc_files(toc: Mapping[str, Any]) -> list[str]:
    """Every document of the table of contents, root first, in reading order."""
    files = [str(toc["root"])]
    for key in ("parts", "chapters"):
        for entry in _walk_entries(toc.get(key, [])):
            files.append(str(entry["file"]))
    return [Path(f).with_suffix("").as_posix() if Path(f).suffix in {".md", ".ipynb"} else f for f in files]


def chapters(root: str | os.PathLike) -> list[Chapter]:
    """The chapters (``notebooks/NN_name`` entries of ``_toc.yml``), in book order.

    Raises
    ------
    BookError
        If a chapter's markdown source is missing or two chapters share a number.
    """
    root = Path(root)
    out: list[Chapter] = []
    for doc in toc_files(read_toc(root)):
        m = _CHAPTER_RE.match(doc)
        if not m:
            continue
        source = root / f"{doc}.md"
        if not source.is_file():
            raise BookError(f"_toc.yml lists {doc}, but {source} does not exist")
        out.append(Chapter(number=m.group(1), docname=doc, source=source))
    numbers = [c.number for c in out]
    dupes = sorted({n for n in numbers if numbers.count(n) > 1})
    if dupes:
        raise BookError(f"_toc.yml: chapter number(s) {', '.join(dupes)} used twice")
    return out


def select_chapters(all_chapters: Sequence[Chapter], only: Iterable[str] | None) -> list[Chapter]:
    """The chapters named in ``only`` (``"01"``, ``"1"``, ``"01_data_selection"``, comma lists).

    ``None`` or empty selects every chapter.

    Raises
    ------
    BookError
        If a name matches no chapter.
    """
    wanted: list[str] = []
    for item in only or []:
        wanted += [w.strip() for w in str(item).split(",") if w.strip()]
    if not wanted:
        return list(all_chapters)
    chosen: list[Chapter] = []
    for w in wanted:
        key = w.zfill(2) if w.isdigit() else w
        hits = [c for c in all_chapters if key in (c.number, c.name, c.docname)]
        if not hits:
            known = ", ".join(c.name for c in all_chapters) or "none"
            raise BookError(f"--only {w}: no such chapter in _toc.yml (chapters: {known})")
        chosen += [c for c in hits if c not in chosen]
    return [c for c in all_chapters if c in chosen]


def parse_value(text: str) -> Any:
    """A command-line parameter value as a Python value.

    Python literals are parsed (``200`` -> int, ``1.2`` -> float, ``None``,
    ``True``, ``"a b"``, ``[1, 2]``); ``none``/``null``/``true``/``false``
    are accepted in any case; anything else stays a string (``lamost``).
    """
    low = text.strip().lower()
    if low in {"none", "null"}:
        return None
    if low in {"true", "false"}:
        return low == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- #
# execution
# --------------------------------------------------------------------------- #
def to_notebook(source: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Convert a jupytext MyST markdown chapter into an ``.ipynb`` at ``dest``.

    The notebook gets a standard ``python3`` kernelspec (what a reader's
    Jupyter offers); :func:`execute_chapter` runs it in the current Python.
    """
    import jupytext
    import nbformat

    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.metadata.setdefault("language_info", {"name": "python"})
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return dest


def declared_parameters(notebook: str | os.PathLike) -> dict[str, Any]:
    """The parameters a notebook declares in its ``parameters`` cell, with defaults.

    Returns ``{name: default value as written in the cell (a string)}``.
    """
    return {name: spec.text for name, spec in parameter_specs(notebook).items()}


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter of a chapter's ``parameters`` cell.

    ``default`` is the parsed default; ``low``/``high`` (with ``low_open``/
    ``high_open``) the documented range and ``choices`` the allowed values,
    read from the cell's comment: ``# ... range (0, inf)`` or ``# ... one of
    "xp", "lamost"``. :data:`COMMON_PARAMETER_RULES` adds the rules every chapter
    shares (``n_max >= 0``, ``cv >= 2``, ...).
    """

    name: str
    text: str
    default: Any
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    types: tuple[type, ...] | None = None

    def check(self, value: Any) -> str | None:
        """None if ``value`` is acceptable, else the one-line reason."""
        d = self.default
        if self.types is not None and value is not None and (
                isinstance(value, bool) or not isinstance(value, self.types)):
            names = " or ".join(t.__name__ for t in self.types)
            return f"expects {names}{' or None' if self.name in _NONE_OK else ''}, got {value!r}"
        if d is not None and value is not None:
            ok_type = (isinstance(value, bool) if isinstance(d, bool)
                       else isinstance(value, (int, float)) and not isinstance(value, bool)
                       if isinstance(d, float)
                       else isinstance(value, int) and not isinstance(value, bool)
                       if isinstance(d, int)
                       else isinstance(value, (list, tuple)) if isinstance(d, (list, tuple))
                       else isinstance(value, type(d)))
            if not ok_type:
                return f"expects {type(d).__name__} (default {self.text}), got {value!r}"
        if value is None:
            return None if d is None or self.name in _NONE_OK else f"may not be None (default {self.text})"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(repr, self.choices))}, got {value!r}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = self.low, self.high
            if lo is not None and (value < lo or (self.low_open and value == lo)):
                return f"{value!r} is outside its range {self._range()}"
            if hi is not None and (value > hi or (self.high_open and value == hi)):
                return f"{value!r} is outside its range {self._range()}"
            if isinstance(value, float) and not np.isfinite(value):
                return f"{value!r} is not a finite number"
        return None

    def _range(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open or self.low is None else '['}{lo}, {hi}" \
               f"{')' if self.high_open or self.high is None else ']'}"


#: Rules shared by every chapter that declares the parameter (fields of :class:`ParameterSpec`).
COMMON_PARAMETER_RULES: dict[str, dict[str, Any]] = {
    "n_max": {"low": 1, "types": (int,)},
    "seed": {"low": 0},
    "cv": {"low": 2},
    "data_mode": {"choices": ("offline", "archive")},
    "snr_min": {"low": 0},
    "test_fraction": {"low": 0, "high": 1, "low_open": True, "high_open": True},
}
_NONE_OK = {"n_max"}
_RANGE = re.compile(r"range\s*([\[(])\s*([-+0-9.eE]*|-?inf)\s*,\s*([-+0-9.eE]*|-?inf)\s*([\])])")
_CHOICES = re.compile(r"one of\s+((?:\"[^\"]*\"|'[^']*'|[-+0-9.eE]+)(?:\s*,\s*(?:\"[^\"]*\"|'[^']*'|[-+0-9.eE]+))*)")


def _bound(text: str) -> float | None:
    return None if text in ("", "inf", "-inf", "+inf") else float(text)


def parameter_specs(notebook: str | os.PathLike) -> dict[str, ParameterSpec]:
    """The :class:`ParameterSpec` of every parameter a notebook declares."""
    import papermill

    specs = {}
    for name, meta in papermill.inspect_notebook(str(notebook)).items():
        text = str(meta.get("default"))
        try:
            default = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            default = None  # an expression (e.g. 250 / 1120): evaluate it
            try:
                default = eval(compile(ast.parse(text, mode="eval"), "<default>", "eval"),
                               {"__builtins__": {}}, {})
            except Exception:  # noqa: BLE001 - an unparsable default accepts any value
                default = None
        help_text = str(meta.get("help") or "")
        kw: dict[str, Any] = dict(COMMON_PARAMETER_RULES.get(name, {}))
        if m := _RANGE.search(help_text):
            kw.update(low=_bound(m.group(2)), high=_bound(m.group(3)),
                      low_open=m.group(1) == "(", high_open=m.group(4) == ")")
        if m := _CHOICES.search(help_text):
            kw["choices"] = tuple(ast.literal_eval(f"({m.group(1)},)"))
        specs[name] = ParameterSpec(name=name, text=text, default=default, help=help_text, **kw)
    return specs


def check_parameters(chapter: Chapter, specs: Mapping[str, ParameterSpec],
                     parameters: Mapping[str, Any]) -> None:
    """Refuse, before anything runs, a parameter the chapter does not declare or cannot take.

    Raises
    ------
    BookError
        Naming the chapter, the parameter, the value and the rule it breaks.
    """
    unknown = sorted(set(parameters) - set(specs))
    if unknown:
        raise BookError(
            f"chapter {chapter.number}: parameter(s) {', '.join(unknown)} not declared in its "
            f"parameters cell (declared: {', '.join(specs) or 'none'})"
        )
    for name, value in parameters.items():
        problem = specs[name].check(value)
        if problem:
            raise BookError(f"chapter {chapter.number}: -p {name} {value!r}: {problem}")


@contextlib.contextmanager
def kernel(build_dir: str | os.PathLike) -> Iterator[str]:
    """A kernelspec that runs the current Python, visible while the context is open.

    Writes ``<build_dir>/jupyter/kernels/mdslam-book/kernel.json`` pointing at
    ``sys.executable`` and prepends ``<build_dir>/jupyter`` to ``JUPYTER_PATH``
    (restored on exit), so the chapters execute with the very interpreter
    (and installed ``mdslam``) that runs the build, whatever kernels the user
    has registered elsewhere. The kernel's matplotlib backend is the inline
    one, as in Jupyter, whatever ``MPLBACKEND`` the caller exports.

    Yields
    ------
    str
        The kernel name to pass to papermill.
    """
    data_dir = Path(build_dir).resolve() / "jupyter"
    spec_dir = data_dir / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        # the kernel's own log (transport notices, shutdown) is noise here: a chapter's
        # errors come back through papermill with the cell and the traceback
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.log_level=CRITICAL",
                 # tqdm's "IProgress not found" warning (no ipywidgets) would print the
                 # interpreter's path in every chapter
                 "--IPKernelApp.exec_lines=import warnings; "
                 "warnings.filterwarnings('ignore', message='IProgress not found')"],
        "display_name": f"Python (mdslam book, {sys.executable})",
        "language": "python",
        # figures inline as in Jupyter, even when the caller exports MPLBACKEND=Agg
        "env": {"MPLBACKEND": "module://matplotlib_inline.backend_inline"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(data_dir), *([old] if old else [])])
    try:
        yield KERNEL_NAME
    finally:
        if old is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old


def _finalise(output: Path, chapter: Chapter, root: Path, parameters: Mapping[str, Any],
              seconds: float, error: str | None) -> None:
    """Reset the kernelspec to python3 and record provenance in the executed notebook."""
    import nbformat

    nb = nbformat.read(output, as_version=4)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    pm = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):  # no machine paths in a notebook readers download
        if pm.get(key):
            pm[key] = Path(pm[key]).name
    nb.metadata["mdslam"] = {
        "source": chapter.source.relative_to(root).as_posix(),
        "source_sha256": _sha256(chapter.source),
        "parameters": dict(parameters),
        "seconds": round(seconds, 2),
        "status": "ok" if error is None else "failed",
        "error": error,
    }
    nbformat.write(nb, output)


def _papermill(source: Path, running: Path, params: Mapping[str, Any], root: Path, cwd: Path,
               timeout: float | None, log_output: bool) -> str | None:
    """Execute ``source`` into ``running`` in the book's kernel; the chapter's error in one line, or None."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        with kernel(root / BUILD_DIR) as kernel_name:
            papermill.execute_notebook(str(source), str(running), parameters=dict(params), kernel_name=kernel_name,
                                       cwd=str(cwd), progress_bar=False, log_output=log_output,
                                       execution_timeout=timeout)
    except PapermillExecutionError as exc:
        evalue = str(exc.evalue).strip().splitlines()
        return f"In [{exc.exec_count}]: {exc.ename}: {evalue[-1] if evalue else ''}"
    return None


def execute_chapter(
    chapter: Chapter,
    root: str | os.PathLike,
    parameters: Mapping[str, Any] | None = None,
    *,
    output: str | os.PathLike | None = None,
    timeout: float | None = None,
    log_output: bool = False,
) -> ChapterRun:
    """Convert one chapter with jupytext and execute it with papermill.

    Parameters
    ----------
    chapter
        The chapter (see :func:`chapters`).
    root
        Repository root.
    parameters
        Overrides injected by papermill: names must be declared in the
        chapter's ``parameters`` cell, values must have the default's type and
        lie in the documented range (:func:`check_parameters`); others raise
        :class:`BookError`.
    output
        Executed notebook path (default: ``_build/executed/NN_name.ipynb``).
        The kernel's working directory is this file's folder.
    timeout
        Per-cell time limit in seconds (``None``: no limit).
    log_output
        Stream the notebook's output to this process's log.

    Returns
    -------
    ChapterRun
        With ``error`` set if the chapter raised: the run's copy, with the
        traceback, is then ``NN_name.failed.ipynb`` and the previous good
        executed copy is kept. Other errors (missing kernel, a parameter the
        chapter does not declare or cannot take) raise before anything runs.
    """
    root = Path(root).resolve()
    out = Path(output) if output is not None else chapter.executed_path(root)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    params = dict(parameters or {})
    tmp_input = out.with_name(f".{out.stem}.input.ipynb")
    running = out.with_name(f".{out.stem}.running.ipynb")
    failed_copy = out.with_name(f"{out.stem}.failed.ipynb")
    to_notebook(chapter.source, tmp_input)
    try:
        check_parameters(chapter, parameter_specs(tmp_input), params)
    except BookError:
        tmp_input.unlink(missing_ok=True)
        raise
    t0 = time.perf_counter()
    try:
        error = _papermill(tmp_input, running, params, root, out.parent, timeout, log_output)
    finally:
        tmp_input.unlink(missing_ok=True)
    seconds = time.perf_counter() - t0
    if not running.exists():
        return ChapterRun(chapter=chapter, output=out, parameters=params, seconds=seconds,
                          error=error or "papermill wrote no notebook")
    _finalise(running, chapter, root, params, seconds, error)
    # the previous good copy is replaced only by a successful run
    final = out if error is None else failed_copy
    os.replace(running, final)
    if error is None:
        failed_copy.unlink(missing_ok=True)
    return ChapterRun(chapter=chapter, output=final, parameters=params, seconds=seconds, error=error)


def execute(
    root: str | os.PathLike,
    only: Iterable[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    *,
    timeout: float | None = None,
    log_output: bool = False,
    echo: Any = print,
) -> list[ChapterRun]:
    """Execute the selected chapters in book order; never raises for a failing chapter.

    Each parameter override goes to every selected chapter that declares it;
    an override declared by none of them is an error (a typo would otherwise
    be silently ignored).

    Returns
    -------
    list of ChapterRun
        One per chapter; check ``run.ok``.
    """
    import tempfile

    root = Path(root).resolve()
    todo = select_chapters(chapters(root), only)
    params = dict(parameters or {})
    declared: dict[str, set[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ch in todo:
            specs = parameter_specs(to_notebook(ch.source, Path(tmp) / f"{ch.name}.ipynb"))
            declared[ch.number] = set(specs)
            check_parameters(ch, specs, {k: v for k, v in params.items() if k in specs})
    orphans = sorted(p for p in params if not any(p in d for d in declared.values()))
    if orphans:
        raise BookError(
            f"parameter(s) {', '.join(orphans)} declared by none of the chapters run "
            f"({', '.join(c.number for c in todo)})"
        )
    runs = []
    for ch in todo:
        mine = {k: v for k, v in params.items() if k in declared[ch.number]}
        shown = " ".join(f"-p {k} {v!r}" for k, v in mine.items())
        echo(f"[mdslam book] executing chapter {ch.number} ({ch.source.name}) {shown}".rstrip())
        run = execute_chapter(ch, root, mine, timeout=timeout, log_output=log_output)
        echo(f"[mdslam book] {run.summary()}")
        runs.append(run)
    return runs


def is_fresh(chapter: Chapter, root: str | os.PathLike,
             parameters: Mapping[str, Any] | None = None) -> bool:
    """True if the chapter's executed copy exists, succeeded, matches its source and was made
    with ``parameters`` (default: none, i.e. the chapter's defaults)."""
    import nbformat

    path = chapter.executed_path(Path(root))
    if not path.is_file():
        return False
    meta = nbformat.read(path, as_version=4).metadata.get("mdslam", {})
    return (meta.get("status") == "ok" and meta.get("source_sha256") == _sha256(chapter.source)
            and dict(meta.get("parameters") or {}) == dict(parameters or {}))


def glued_values(notebook: str | os.PathLike) -> dict[str, Any]:
    """The values a chapter glued with ``myst_nb.glue`` (its key numbers), by name.

    Plain-text representations that are Python literals come back as values
    (``1234``, ``0.12``); anything else as its text.
    """
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    out: dict[str, Any] = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if not name:
                continue
            data = o.get("data", {})
            text = next((v for k, v in data.items() if k.endswith("text/plain")), None)
            if text is None:
                continue
            try:
                out[name] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                out[name] = text
    return out


# --------------------------------------------------------------------------- #
# staging and rendering
# --------------------------------------------------------------------------- #
def data_page(template: str) -> str:
    """Fill the data page template with the dataset registry's Markdown table.

    The line ``<!-- mdslam:registry-table -->`` of ``template`` is replaced by
    :func:`mdslam.datasets.registry_markdown`, so the page can never disagree
    with the registry.

    Raises
    ------
    BookError
        If the template has no marker line.
    """
    from .. import datasets

    if REGISTRY_MARKER not in template:
        raise BookError(f"book/data.md has no {REGISTRY_MARKER} line to fill with the registry table")
    return template.replace(REGISTRY_MARKER, datasets.registry_markdown())


def _filter_toc(node: Any, keep: set[str]) -> Any:
    """Copy of a toc (sub)tree without the chapter entries not in ``keep``."""
    if isinstance(node, list):
        out = [_filter_toc(child, keep) for child in node]
        return [child for child in out if child is not None]
    if isinstance(node, dict):
        if "file" in node:
            doc = Path(str(node["file"])).with_suffix("").as_posix() if Path(str(node["file"])).suffix else str(node["file"])
            if _CHAPTER_RE.match(doc) and doc not in keep:
                return None
        new = {}
        for key, value in node.items():
            if key in ("parts", "chapters", "sections"):
                value = _filter_toc(value, keep)
                if not value:
                    continue
            new[key] = value
        if "file" not in new and not any(k in new for k in ("parts", "chapters", "sections")) and "caption" in node:
            return None  # a part emptied of its chapters
        return new
    return node


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def stage(root: str | os.PathLike, include: Sequence[Chapter], echo: Any = print) -> Path:
    """Write the book source to render: ``_build/book-src/``.

    It holds ``_config.yml`` (the repository's, with execution forced off),
    a ``_toc.yml`` restricted to the chapters in ``include``, a copy of
    ``book/`` with the data page generated from the registry, and the
    executed notebooks of ``include`` under ``notebooks/``.

    Returns
    -------
    Path
        The staging folder.
    """
    import yaml

    root = Path(root).resolve()
    staging = root / STAGING_DIR
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    config = yaml.safe_load((root / "_config.yml").read_text()) or {}
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    sphinx_cfg = config.get("sphinx") or {}
    missing = [ext for ext in sphinx_cfg.get("extra_extensions") or [] if not _importable(ext)]
    for ext in missing:  # e.g. sphinx-mathjax-offline: the book still builds, MathJax from its CDN
        echo(f"[mdslam book] warning: Sphinx extension {ext!r} is not installed; building without it "
             "(pip install -e '.[book]')")
        sphinx_cfg["extra_extensions"].remove(ext)
    (staging / "_config.yml").write_text(
        "# generated by mdslam.compendium.build from the repository's _config.yml: do not edit\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    toc = _filter_toc(read_toc(root), {c.docname for c in include})
    (staging / "_toc.yml").write_text(
        "# generated by mdslam.compendium.build from the repository's _toc.yml: do not edit\n"
        + yaml.safe_dump(toc, sort_keys=False)
    )
    shutil.copytree(root / "book", staging / "book",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    data_md = staging / "book" / "data.md"
    if data_md.exists():
        data_md.write_text(data_page(data_md.read_text()))
    for page in (staging / "book").glob("*.md"):  # the flag reference, generated from the code
        text = page.read_text()
        if FLAG_MARKER in text:
            from .. import flags

            page.write_text(text.replace(FLAG_MARKER, flags.flag_markdown()))
    (staging / "notebooks").mkdir()
    for ch in include:
        shutil.copy2(ch.executed_path(root), staging / "notebooks" / f"{ch.name}.ipynb")
    echo(f"[mdslam book] staged {len(include)} chapter(s) in {staging}")
    return staging


def render(root: str | os.PathLike, staging: str | os.PathLike | None = None, *,
           strict: bool = True, echo: Any = print) -> Path:
    """Run ``jupyter-book build`` on the staging folder (execution off).

    Parameters
    ----------
    root
        Repository root; the HTML goes to ``<root>/_build/html``.
    staging
        The folder made by :func:`stage` (default ``_build/book-src``).
    strict
        Turn Sphinx warnings into errors (``-W --keep-going``).

    Returns
    -------
    Path
        ``_build/html``.

    Raises
    ------
    BookError
        If ``jupyter-book`` fails (its output is echoed).
    """
    root = Path(root).resolve()
    staging = Path(staging) if staging is not None else root / STAGING_DIR
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
           "build", str(staging), "--path-output", str(root), "--all"]
    if strict:
        cmd += ["-W", "--keep-going"]
    html = root / BUILD_DIR / "html"
    if html.exists():  # no stale page or figure survives a rebuild
        shutil.rmtree(html)
    echo(f"[mdslam book] rendering: jupyter-book build {staging.relative_to(root)} (execution off)")
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        echo(proc.stdout[-5000:])
        echo(proc.stderr[-5000:])
        raise BookError(f"jupyter-book build failed (exit {proc.returncode}); see the output above")
    warnings = [ln for ln in proc.stderr.splitlines() if "WARNING" in ln]
    for ln in warnings:
        echo(ln)
    echo(f"[mdslam book] book written to {html / 'index.html'}")
    return html


def build(
    root: str | os.PathLike | None = None,
    only: Iterable[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    *,
    run: bool = True,
    render_book: bool = True,
    strict: bool = True,
    timeout: float | None = None,
    log_output: bool = False,
    echo: Any = print,
) -> Path | None:
    """The whole pipeline: execute the chapters, stage, render.

    Parameters
    ----------
    root
        Repository root (default: :func:`find_root`).
    only
        Chapters to execute (default: all). The book then holds these plus
        every other chapter whose executed copy is fresh (see
        :func:`is_fresh`); stale or missing ones are left out, with a note.
    parameters
        papermill overrides, passed to each chapter that declares them.
    run
        Execute chapters (False: render the executed copies already there).
    render_book
        Render the HTML (False: execute only).
    strict
        Sphinx warnings are errors.
    timeout
        Per-cell time limit in seconds.

    Returns
    -------
    Path or None
        ``_build/html`` if rendered.

    Raises
    ------
    ChapterError
        If any chapter raised (nothing is rendered).
    BookError
        For layout, parameter or rendering problems.
    """
    root = find_root() if root is None else Path(root).resolve()
    all_chapters = chapters(root)
    t0 = time.perf_counter()
    runs: list[ChapterRun] = []
    if run:
        runs = execute(root, only, parameters, timeout=timeout, log_output=log_output, echo=echo)
        failed = [r for r in runs if not r.ok]
        if failed:
            raise ChapterError(failed)
    if not render_book:
        return None
    include = []
    ran = {r.chapter.number: r.parameters for r in runs}
    for ch in all_chapters:
        if is_fresh(ch, root, ran.get(ch.number)):
            include.append(ch)
        else:
            echo(f"[mdslam book] chapter {ch.number} left out of the book: no fresh executed copy "
                 f"with its default parameters (run: mdslam book --only {ch.number})")
    if not include and all_chapters:
        raise BookError("no chapter has a fresh executed copy: run mdslam book without --no-run")
    t1 = time.perf_counter()
    html = render(root, stage(root, include, echo=echo), strict=strict, echo=echo)
    t2 = time.perf_counter()
    per_chapter = ", ".join(f"{r.chapter.number}: {r.seconds:.1f} s" for r in runs)
    echo(f"[mdslam book] timings: chapters {t1 - t0:.1f} s ({per_chapter or 'none executed'}), "
         f"staging + rendering {t2 - t1:.1f} s, total {t2 - t0:.1f} s")
    return html


# The chapter helpers, re-exported for chapters written against ``mdslam.book``.
from .chapter import (  # noqa: E402
    INPUTS,
    archive_only,
    comparison_table,
    load,
    markdown_table,
    provenance,
    require_data_mode,
    subsample,
    training_set,
)
