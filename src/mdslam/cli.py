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
    if args.action == "verify":
        return _data_verify(args)
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


def _data_verify(args: argparse.Namespace) -> int:
    from . import datasets

    names = None if args.names == ["all"] else args.names
    try:
        rows = datasets.verify(names, online=args.online, progress=args.online)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    bad = [r for r in rows if r[2] in ("mismatch", "error") or (r[2] == "missing" and not args.online)]
    for name, rel, status, msg in rows:
        print(f"{status:8s} {name:36s} {rel}  {msg if status != 'ok' else ''}".rstrip())
    where = "the registered URLs" if args.online else "the mirror"
    if bad:
        print(f"{len(bad)} of {len(rows)} file(s) failed against {where}", file=sys.stderr)
        return 1
    print(f"{len(rows)} of {len(rows)} file(s) ok against {where}")
    return 0


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="list, fetch or verify registered datasets")
    p.add_argument("action", choices=["list", "fetch", "markdown", "verify"])
    p.add_argument("names", nargs="*", default=["all"], help="dataset names (default: all)")
    p.add_argument("--online", action="store_true",
                   help="verify: download every file from its registered URL and check its sha256 "
                        "(default: check the mirror named by MDSLAM_DATA_MIRROR)")
    p.set_defaults(func=_cmd_data)


def _cmd_archive(args: argparse.Namespace) -> int:
    from . import datasets
    from .compendium import inputs

    if args.action == "list":
        for ch, items in inputs.CHAPTER_INPUTS.items():
            names = dict.fromkeys(f"{n}({', '.join(f'{k}={v!r}' for k, v in kw.items())})" for n, kw in items)
            print(f"chapter {ch}: {', '.join(names)}")
        return 0
    if not args.items:
        print("error: give chapter numbers (01..08) or input names; see 'mdslam archive list'", file=sys.stderr)
        return 2
    todo: list[tuple[str, dict]] = []
    for item in args.items:
        todo.extend(inputs.CHAPTER_INPUTS.get(item.zfill(2), [(item, {})]))
    status = 0
    for name, kw in dict.fromkeys((n, tuple(sorted(k.items()))) for n, k in todo):
        try:
            result = inputs.fetch(name, n_max=args.n_max, seed=args.seed, **dict(kw))
        except (ValueError, datasets.DatasetError) as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"{name}: {inputs.summary(result)}")
    return status


def _add_archive(sub) -> None:
    p = sub.add_parser("archive", help="download the archive-mode inputs of chapters into the cache",
                       description="Run mdslam.compendium.inputs functions (by chapter number or by name) so "
                                   "that 'mdslam book -p data_mode archive' later reads from the cache.")
    p.add_argument("action", choices=["list", "fetch"])
    p.add_argument("items", nargs="*", default=[], help="chapter numbers (01..08) or input names")
    p.add_argument("--n-max", type=int, default=None, help="cap each sample before downloading (seeded draw)")
    p.add_argument("--seed", type=int, default=42, help="seed of the --n-max draw")
    p.set_defaults(func=_cmd_archive)


# ----------------------------------------------------------------------------- book
def _cmd_book(args: argparse.Namespace) -> int:
    from .compendium import build as book

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


# ----------------------------------------------------------------------------- train
def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _cmd_train(args: argparse.Namespace) -> int:
    import numpy as np
    from astropy.table import Table

    from . import slam, slam_io

    sp = slam_io.read_spectra_files(args.spectra, fmt=args.format, progress=True)
    if sp.errors:
        for e in sp.errors:
            print(f"error: {e}", file=sys.stderr)
        return 1
    lengths = {len(f) for f in sp.flux}
    if len(lengths) != 1:
        print(f"error: training spectra differ in length ({sorted(lengths)}); put them on one grid",
              file=sys.stderr)
        return 1
    flux = np.vstack(sp.flux)
    ivar = None if sp.ivar is None else np.vstack(sp.ivar)
    labels = Table.read(args.labels)
    cols = [c.strip() for c in args.label_cols.split(",")]
    missing = [c for c in cols if c not in labels.colnames]
    if missing:
        print(f"error: {args.labels} has no column(s) {missing}", file=sys.stderr)
        return 1
    if args.id_col:
        key = {str(v).strip(): i for i, v in enumerate(labels[args.id_col])}
        rows = np.array([key.get(str(i).strip(), -1) for i in sp.ids])
        if np.all(rows < 0):
            print(f"error: no spectrum id matches {args.labels}[{args.id_col!r}]", file=sys.stderr)
            return 1
    else:
        if len(labels) != flux.shape[0]:
            print(f"error: {len(labels)} label rows for {flux.shape[0]} spectra (use --id-col to match)",
                  file=sys.stderr)
            return 1
        rows = np.arange(len(labels))
    y = np.full((flux.shape[0], len(cols)), np.nan)
    has = rows >= 0
    for k, c in enumerate(cols):
        y[has, k] = np.asarray(labels[c], float)[rows[has]]
    keep = np.all(np.isfinite(y), axis=1)
    print(f"training on {keep.sum()} of {flux.shape[0]} spectra ({(~keep).sum()} without finite labels), "
          f"{flux.shape[1]} pixels")
    units = ([u.strip() for u in args.label_units.split(",")] if args.label_units
             else [str(labels[c].unit or "") for c in cols])
    domain = slam.QIU2025_USABLE_RANGE if args.domain == "qiu2025" else None
    model = slam.SLAM(C=_floats(args.C), epsilon=_floats(args.epsilon), gamma=_floats(args.gamma),
                      cv=args.cv, random_state=args.seed, domain=domain, verbose=True)
    model.fit(flux[keep], y[keep], None if ivar is None else ivar[keep], wavelength=sp.wavelength,
              label_names=cols, label_units=units)
    model.save(args.out)
    edge = {k: float(np.mean((getattr(model, k + "_") == g.min()) | (getattr(model, k + "_") == g.max())))
            for k, g in model.param_grid_.items() if g.size > 2}
    print(f"wrote {args.out}: median CV-MSE {np.median(model.cv_mse_[model.pixel_usable_]):.3g} (flux^2); "
          f"fraction of pixels on a grid edge: {edge}")
    return 0


def _add_train(sub) -> None:
    from .slam import DEFAULT_C, DEFAULT_EPSILON, DEFAULT_GAMMA

    def csv(t):
        return ",".join(str(v) for v in t)

    p = sub.add_parser("train", help="train a SLAM model (per-pixel SVR, k-fold CV grid search)")
    p.add_argument("--spectra", nargs="+", required=True,
                   help="npz / FITS table(s) of normalised flux (+ivar) on one grid")
    p.add_argument("--format", default="auto", choices=["auto", "arrays"], help="spectra file format")
    p.add_argument("--labels", required=True, help="table of training labels (FITS, ECSV, CSV...)")
    p.add_argument("--label-cols", required=True, help="comma-separated label columns, e.g. teff,logg,fe_h")
    p.add_argument("--label-units", default=None, help="comma-separated units (default: from the table)")
    p.add_argument("--id-col", default=None, help="match label rows to spectrum ids by this column")
    p.add_argument("--out", required=True, help="model file to write (.npz)")
    p.add_argument("--C", default=csv(DEFAULT_C), help="grid of C (comma-separated)")
    p.add_argument("--epsilon", default=csv(DEFAULT_EPSILON), help="grid of epsilon")
    p.add_argument("--gamma", default=csv(DEFAULT_GAMMA), help="grid of gamma")
    p.add_argument("--cv", type=int, default=10, help="k of the k-fold CV (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold shuffle")
    p.add_argument("--domain", default="training", choices=["training", "qiu2025"],
                   help="label domain for the outside-domain flags")
    p.set_defaults(func=_cmd_train)


# ----------------------------------------------------------------------------- predict
def _cmd_predict(args: argparse.Namespace) -> int:
    from . import batch

    engine = args.engine or ("dask" if args.scheduler else "inprocess")
    if args.scheduler and engine != "dask":
        print("error: --scheduler needs --engine dask", file=sys.stderr)
        return 1
    try:
        src = batch.FileSource(args.spectra, fmt=args.format, recursive=args.recursive)
        if not src.paths:
            print(f"error: no spectra files in {' '.join(args.spectra)}", file=sys.stderr)
            return 1
        res = batch.predict_batch(
            args.model, src, args.out, chunk_size=args.chunk_size, engine=engine,
            n_workers=args.n_workers, scheduler=args.scheduler, threads=args.threads,
            resume=args.resume, overwrite=args.overwrite, work_dir=args.work_dir,
            keep_parts=args.keep_parts, progress=True, low_snr=args.low_snr)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for e in res.errors:
        print(f"warning: {e}", file=sys.stderr)
    for i, e in res.failed_chunks.items():
        print(f"warning: chunk {i}: {e}", file=sys.stderr)
    if res.out is None:
        print(f"error: catalogue not written; finished chunks are in {res.work_dir} (rerun with --resume)",
              file=sys.stderr)
        return 1
    print(f"wrote {res.out}: {res.n_spectra} spectra, {res.n_failed_spectra} failed, "
          f"{res.n_unflagged} unflagged ({res.n_chunks} chunks, {res.n_chunks_skipped} resumed, "
          f"{res.seconds:.1f} s, {engine})")
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict", help="labels for spectra with a trained SLAM model",
        description=(
            "Label spectra files (or directories of them) with a trained SLAM model, streaming them in "
            "chunks into a FITS or Parquet catalogue. Finished chunks are kept in <out>.parts/ until the "
            "catalogue is written, so an interrupted run continues with --resume. A spectrum or chunk that "
            "fails is flagged (flag bit 1, 'error' column), never fatal."))
    p.add_argument("--model", required=True, help="model file written by 'mdslam train'")
    p.add_argument("--out", required=True,
                   help="output catalogue: .fits (default kind) or .parquet; other astropy formats "
                        "(.ecsv, .csv...) are assembled in memory")
    p.add_argument("spectra", nargs="+",
                   help="spectra files or directories (npz / FITS tables, or LAMOST/BOSS files)")
    p.add_argument("--format", default="auto", choices=["auto", "arrays", "lamost", "boss"],
                   help="input format; lamost/boss are preprocessed onto the model grid")
    p.add_argument("--recursive", action="store_true", help="search directories recursively")
    p.add_argument("--low-snr", type=float, default=10.0, help="flag spectra below this SNR")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing catalogue (and discard an earlier run's parts)")
    p.add_argument("--chunk-size", type=int, default=1000,
                   help="spectra per chunk: the unit of work, memory and resuming (default 1000)")
    p.add_argument("--engine", choices=["inprocess", "joblib", "dask"], default=None,
                   help="where chunks run: this process (default), joblib worker processes, or Dask "
                        "(a LocalCluster, or --scheduler)")
    p.add_argument("--n-workers", type=int, default=None,
                   help="worker processes for joblib / the Dask LocalCluster (default: all CPUs)")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="address of a running Dask scheduler (implies --engine dask); the model file "
                        "and spectra must be readable by its workers")
    p.add_argument("--threads", type=int, default=None,
                   help="threads of the model in each worker (default: all CPUs in process, 1 per worker)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: finished chunks in the work directory are not redone")
    p.add_argument("--work-dir", default=None, help="directory of the chunk files (default: <out>.parts)")
    p.add_argument("--keep-parts", action="store_true", help="keep the chunk files after writing the catalogue")
    p.set_defaults(func=_cmd_predict)


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The ``mdslam`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="mdslam", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mdslam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, obj in sorted(globals().items()):
        if name.startswith("_add_") and callable(obj):
            obj(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (``argv`` default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
