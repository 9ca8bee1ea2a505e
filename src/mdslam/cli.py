"""Command-line interface: ``mdslam data``, ``mdslam train``, ``mdslam predict``, ``mdslam book``.

Each subcommand is declared by one ``_add_<name>`` function below and calls
into the package; no science lives here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__


# ----------------------------------------------------------------------------- data
def _cmd_data(args: argparse.Namespace) -> int:
    from . import datasets

    if args.action == "list":
        for d in datasets.REGISTRY.values():
            print(f"{d.name:36s} {len(d.files):3d} file(s)  {d.description[:80]}")
        return 0
    if args.action == "markdown":
        print(datasets.registry_markdown())
        return 0
    # fetch
    names = datasets.names() if args.names == ["all"] else args.names
    status = 0
    for name in names:
        try:
            paths = datasets.fetch(name, progress=True)
        except (KeyError, datasets.DatasetError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        where = paths[0].parent if len(paths) > 1 else paths[0]
        print(f"{name}: {len(paths)} file(s) verified at {where}")
    return status


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="list or fetch registered datasets")
    p.add_argument("action", choices=["list", "fetch", "markdown"])
    p.add_argument("names", nargs="*", default=["all"], help="dataset names (default: all)")
    p.set_defaults(func=_cmd_data)


# ----------------------------------------------------------------------------- book
def _cmd_book(args: argparse.Namespace) -> int:
    from . import book

    params = {name: book.parse_value(value) for name, value in args.param or []}
    try:
        html = book.build(
            root=args.root,
            only=args.only,
            parameters=params,
            run=not args.render_only,
            render_book=not args.no_render,
            strict=not args.no_strict,
            timeout=args.timeout,
            log_output=args.log_output,
        )
    except book.BookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if html is not None:
        print(f"open {html / 'index.html'}")
    return 0


def _add_book(sub) -> None:
    p = sub.add_parser(
        "book",
        help="execute the chapters with papermill and build the Jupyter Book",
        description=(
            "Execute every chapter of _toc.yml (jupytext -> papermill, into _build/executed/) "
            "and render the book with execution off (_build/html/). Exits non-zero, naming the "
            "chapter, if any chapter raises."
        ),
    )
    p.add_argument("--only", action="append", metavar="NN",
                   help="execute only chapter NN (repeatable, or comma-separated); the book keeps "
                        "other chapters whose executed copy is fresh")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="papermill parameter override, e.g. -p n_max 200 -p track xp "
                        "(given to every chapter that declares NAME)")
    p.add_argument("--root", default=None, help="repository root (default: found from the cwd)")
    p.add_argument("--no-render", action="store_true", help="execute the chapters, do not render")
    p.add_argument("--render-only", action="store_true",
                   help="render the executed copies already in _build/executed")
    p.add_argument("--no-strict", action="store_true", help="do not turn Sphinx warnings into errors")
    p.add_argument("--timeout", type=float, default=None, help="per-cell time limit in seconds")
    p.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    p.set_defaults(func=_cmd_book)


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdslam", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mdslam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, obj in sorted(globals().items()):
        if name.startswith("_add_") and callable(obj):
            obj(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
