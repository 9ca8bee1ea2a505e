"""Command-line interface: ``mdslam data``, ``mdslam train``, ``mdslam train-grid``, ``mdslam predict``, ``mdslam book``.

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
def _blas_note() -> None:
    """One line on stderr where OpenBLAS runs AVX2 kernels on an AVX-512 CPU (:func:`mdslam.blasinfo.coretype_hint`)."""
    from .blasinfo import coretype_hint

    hint = coretype_hint()
    if hint:
        print(f"note: {hint}", file=sys.stderr)


def _floats(text: str) -> tuple[float, ...]:
    """Comma-separated numbers of an option (``mdslam.checks.parse_floats`` names the option on error)."""
    return tuple(float(v) for v in text.split(",") if v.strip())


def _cmd_train(args: argparse.Namespace) -> int:
    """``mdslam train``: every input is checked (mdslam.checks) before the first SVR is solved."""
    import logging

    from . import checks

    handler = logging.StreamHandler(sys.stderr)          # counted exclusions are printed as warnings
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logger = logging.getLogger("mdslam")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        return _train(args)
    except (checks.InputError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        logger.removeHandler(handler)


def _train(args: argparse.Namespace) -> int:
    import numpy as np

    from . import checks, slam

    _check_out(args.out)
    grid = {k: checks.parse_floats(getattr(args, k), f"--{k}") for k in ("C", "epsilon", "gamma")}
    checks.check_hyperparameters(grid["C"], grid["epsilon"], grid["gamma"])
    chi2_scale = _chi2_scale(args.chi2_scale)
    data = _training_data(args)
    if data is None:
        return 1
    flux, ivar, y, cols, units, wave = data
    keep = checks.check_training_labels(y, cols, units, source=args.labels)
    keep_iv = checks.check_training_ivar(ivar, "training spectra")
    if keep_iv is not None:
        keep &= keep_iv
    checks.check_training_labels(y[keep], cols, units, source=args.labels)   # still varied after the cuts
    checks.check_cv(args.cv, int(keep.sum()))
    print(f"training on {keep.sum()} of {len(y)} spectra ({(~keep).sum()} excluded), {flux.shape[1]} pixels")
    _blas_note()
    domain = slam.QIU2025_USABLE_RANGE if args.domain == "qiu2025" else None
    model = slam.SLAM(C=grid["C"], epsilon=grid["epsilon"], gamma=grid["gamma"],
                      cv=args.cv, random_state=args.seed, domain=domain, verbose=True,
                      prior=None if args.prior == "none" else args.prior, chi2_scale=chi2_scale,
                      likelihood=args.likelihood)
    model.fit(flux[keep], y[keep], None if ivar is None else ivar[keep], wavelength=wave,
              label_names=cols, label_units=units)
    model.save(args.out)
    edge = {k: float(np.mean((getattr(model, k + "_") == g.min()) | (getattr(model, k + "_") == g.max())))
            for k, g in model.param_grid_.items() if g.size > 2}
    print(f"wrote {args.out}: median CV-MSE {np.median(model.cv_mse_[model.pixel_usable_]):.3g} (flux^2); "
          f"fraction of pixels on a grid edge: {edge}")
    if args.prior != "none":
        print(f"labels: posterior mean, {args.prior} prior, chi2 scale {model.chi2_scale_:g}"
              + (" (chosen by CV)" if args.chi2_scale == "cv" else ""))
    if args.likelihood == "correlated":
        print(f"likelihood: correlated pixels, model-error covariance of rank {model.noise_rank_cv_['rank']} "
              "(chosen by CV) plus a diagonal")
    return 0


def _chi2_scale(text: str) -> str | float:
    """``--chi2-scale``: ``cv`` or a positive number (an :class:`mdslam.checks.InputError` otherwise)."""
    from .checks import InputError

    if text.strip().lower() == "cv":
        return "cv"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise InputError(f"--chi2-scale {text!r}: expected 'cv' or a positive number")
    return value


def _check_out(out: str) -> None:
    """Refuse an output path whose directory is missing or not writable (before any training)."""
    import os
    from pathlib import Path

    from .checks import InputError

    out_dir = Path(out).expanduser().resolve().parent
    if not out_dir.is_dir():
        raise InputError(f"--out {out}: directory {out_dir.name or out_dir} does not exist")
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"--out {out}: directory is not writable")


def _training_data(args: argparse.Namespace):
    """(flux, ivar, labels, label names, units, wavelength) of ``mdslam train``'s files.

    None after printing the errors of unreadable spectra files.
    """
    from pathlib import Path

    import numpy as np
    from astropy.table import Table

    from . import checks, slam_io

    cols = [c.strip() for c in args.label_cols.split(",") if c.strip()]
    units = [u.strip() for u in args.label_units.split(",")] if args.label_units else None
    if units is not None and len(units) != len(cols):
        raise checks.InputError(f"--label-units: {len(units)} unit(s) for {len(cols)} label column(s)")
    if not Path(args.labels).exists():
        raise checks.InputError(f"--labels {args.labels}: no such file")
    try:
        labels = Table.read(args.labels)
    except Exception as exc:  # noqa: BLE001 - astropy raises many kinds; one line names the file
        raise checks.InputError(f"--labels {args.labels}: cannot be read as a table ({type(exc).__name__})") from exc
    missing = [c for c in cols if c not in labels.colnames]
    if missing:
        raise checks.InputError(f"{args.labels} has no column(s) {missing}")
    units = units if units is not None else [str(labels[c].unit or "") for c in cols]
    sp = slam_io.read_spectra_files(args.spectra, fmt=args.format, progress=True)
    for e in sp.errors:
        print(f"error: {e}", file=sys.stderr)
    if sp.errors:
        return None
    if len({len(f) for f in sp.flux}) != 1:
        raise checks.InputError(f"training spectra differ in length ({sorted({len(f) for f in sp.flux})}); "
                                "put them on one grid")
    flux = np.vstack(sp.flux)
    n = flux.shape[0]
    rows = _label_rows(args, labels, sp.ids, n)
    y = np.full((n, len(cols)), np.nan)
    has = rows >= 0
    for k, c in enumerate(cols):
        y[has, k] = checks.label_values(labels[c], c, args.labels)[rows[has]]
    return flux, None if sp.ivar is None else np.vstack(sp.ivar), y, cols, units, sp.wavelength


def _label_rows(args: argparse.Namespace, labels, ids, n: int):
    """Row of the label table for each spectrum (-1: none), checking ids are unique."""
    import numpy as np

    from . import checks

    if not args.id_col:
        if len(labels) != n:
            raise checks.InputError(f"{args.labels}: {len(labels)} label rows for {n} spectra "
                                    "(use --id-col to match)")
        return np.arange(n)
    if args.id_col not in labels.colnames:
        raise checks.InputError(f"--id-col: {args.labels} has no column {args.id_col!r}")
    checks.check_unique_ids(labels[args.id_col], args.labels, args.id_col)
    checks.check_unique_ids(ids, "spectra files")
    key = {str(v).strip(): i for i, v in enumerate(labels[args.id_col])}
    rows = np.array([key.get(str(i).strip(), -1) for i in ids])
    if np.all(rows < 0):
        raise checks.InputError(f"no spectrum id matches {args.labels}[{args.id_col!r}]")
    if (rows < 0).any():
        print(f"warning: {(rows < 0).sum()} of {n} spectra have no row in {args.labels}; excluded",
              file=sys.stderr)
    return rows


def _add_train(sub) -> None:
    from .slam import DEFAULT_C, DEFAULT_EPSILON, DEFAULT_GAMMA

    def csv(t):
        return ",".join(str(v) for v in t)

    p = sub.add_parser("train", help="train a SLAM model (per-pixel SVR, k-fold CV grid search)")
    p.add_argument("--spectra", nargs="+", required=True,
                   help="npz / FITS table(s) of normalised flux (+ivar) on one grid; every input is "
                        "checked before training (mdslam.checks: plausible label ranges, no-value codes, "
                        "duplicate ids, grids, hyperparameters)")
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
    p.add_argument("--prior", default="none", choices=["none", "flat", "training"],
                   help="label prior of Li 2021 eq. 2: 'none' gives the maximum-likelihood labels (eq. 3, "
                        "default); 'flat' (uniform over the training labels' box) and 'training' (a Gaussian "
                        "fitted to the training labels) give posterior means")
    p.add_argument("--chi2-scale", default="cv", metavar="{cv,<float>}",
                   help="likelihood scale s of exp(-chi2 / 2s) with a prior: 'cv' chooses it by k-fold CV on "
                        "the training set (default), a number fixes it")
    p.add_argument("--likelihood", default="independent", choices=["independent", "correlated"],
                   help="'independent': every pixel its own variance sigma_obs^2 + CV-MSE (Li 2021 eq. 3, "
                        "default); 'correlated': chi2 = r^T Sigma^-1 r with Sigma a low-rank-plus-diagonal "
                        "model of the training set's CV residual covariance plus each spectrum's noise")
    p.set_defaults(func=_cmd_train)


# ----------------------------------------------------------------------------- train-grid
def _cmd_train_grid(args: argparse.Namespace) -> int:
    import json

    from . import datasets, gridslam, modelgrid

    try:
        grid = gridslam.survey_grid(args.grid, args.survey, reduced=args.reduced)
    except (modelgrid.ModelGridError, datasets.DatasetError, ValueError) as exc:
        print(f"error: --grid {args.grid}: {exc}", file=sys.stderr)
        return 1
    kw = dict(C=_floats(args.C), epsilon=_floats(args.epsilon), gamma=_floats(args.gamma),
              n_jobs=args.n_jobs)
    print(f"grid: {grid.provenance} ({len(grid)} spectra x {grid.wavelength.size} px)")
    _blas_note()
    given = {"teff": args.teff_range, "m_h": args.m_h_range, "logg": args.logg_range}
    ranges = None
    if any(v is not None for v in given.values()):
        ys = grid.y
        ranges = {}
        for k, name in enumerate(grid.label_names):
            lo, hi = gridslam.LI2021_DRAW_RANGES.get(name, (ys[:, k].min(), ys[:, k].max()))
            lo, hi = (max(lo, ys[:, k].min()), min(hi, ys[:, k].max()))
            ranges[name] = tuple(_floats(given[name])) if given.get(name) else (lo, hi)
            if len(ranges[name]) != 2:
                print(f"error: --{name.replace('_', '-')}-range needs two numbers, got {given[name]!r}",
                      file=sys.stderr)
                return 1
    res = gridslam.train_grid_slam(grid, args.n_draw, ranges, cv=args.cv, seed=args.seed,
                                   draw_snr=args.draw_snr, slam_kwargs=kw)
    if args.test_snr:
        tab = gridslam.noisy_test(res, list(_floats(args.test_snr)), n_test=args.n_test, seed=args.seed + 1)
        for row in tab:
            print(f"  SNR {row['snr']:6.1f} {row['label']:5s} bias {row['bias']:+9.3f} scatter "
                  f"{row['scatter']:8.3f} (spread {row['spread']:.3f}, skill {row['skill']:.3f})")
    res.slam1.save(args.out)
    print(f"wrote {args.out}: SLAM_1 on {args.n_draw} draws ({', '.join(res.slam1.label_names_)}); "
          f"timings {json.dumps({k: round(v, 1) for k, v in res.timings.items()})}")
    return 0


def _add_train_grid(sub) -> None:
    from .gridslam import QUICK_GRID

    def csv(t):
        return ",".join(str(v) for v in t)

    p = sub.add_parser(
        "train-grid", help="SLAM on a model grid: SLAM_0 on the nodes -> uniform draws -> SLAM_1 (Li 2021 sec. 4.1.2)",
        description=("Train SLAM_0 on a sparse model grid taken to the survey (convolved, rebinned, normalised "
                     "like observed spectra), draw N label points uniformly (Li et al. 2021: 2800-4500 K, "
                     "[M/H] -1 to 0, log g 4.5-5.5, within the grid), compute their spectra with SLAM_0 and "
                     "train SLAM_1 on them with k-fold CV. The SLAM_1 model file is what 'mdslam predict' reads."))
    p.add_argument("--grid", choices=["mock", "btsettl"], default="mock",
                   help="mock: the offline template grid; btsettl: BT-Settl CIFIST from SVO (archive mode)")
    p.add_argument("--survey", choices=["lamost", "boss"], default="lamost", help="resolution to convolve to")
    p.add_argument("--n-draw", type=int, default=1000, help="spectra drawn through SLAM_0 (Li et al.: 15000)")
    p.add_argument("--out", required=True, help="SLAM_1 model file to write (.npz)")
    p.add_argument("--cv", type=int, default=10, help="k of SLAM_1's k-fold CV (default 10, as Li et al.)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws and CV folds")
    p.add_argument("--draw-snr", type=float, default=None,
                   help="add the survey's photon noise at this SNR to the draws (default: noiseless)")
    p.add_argument("--test-snr", default="5,10,20,50,100,200",
                   help="SNRs of the noisy held-out test that also fits the error law (empty: skip)")
    p.add_argument("--n-test", type=int, default=200, help="held-out spectra per test SNR")
    p.add_argument("--teff-range", default=None, metavar="LO,HI",
                   help="Teff range of the draws, K (default: Li's 2800,4500 within the grid)")
    p.add_argument("--m-h-range", default=None, metavar="LO,HI",
                   help="[M/H] range of the draws, dex, e.g. --m-h-range=-1,0.5 (default: Li's -1,0 within the grid)")
    p.add_argument("--logg-range", default=None, metavar="LO,HI",
                   help="log g range of the draws, dex (grids with log g; default: Li's 4.5,5.5)")
    p.add_argument("--reduced", action="store_true", help="mock grid with 200 K instead of 100 K Teff nodes")
    p.add_argument("--C", default=csv(QUICK_GRID["C"]), help="grid of C (comma-separated)")
    p.add_argument("--epsilon", default=csv(QUICK_GRID["epsilon"]), help="grid of epsilon")
    p.add_argument("--gamma", default=csv(QUICK_GRID["gamma"]), help="grid of gamma")
    p.add_argument("--n-jobs", type=int, default=None, help="threads of the SVR solves (default: all CPUs)")
    p.set_defaults(func=_cmd_train_grid)


# ----------------------------------------------------------------------------- predict
def _interrupt_on_sigterm():
    """Make SIGTERM raise KeyboardInterrupt (workers stopped, parts kept); return a restorer."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    got: list[int] = []

    def handler(signum, frame):
        got.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)

    def restore() -> int:
        signal.signal(signal.SIGTERM, previous)
        return 128 + got[0] if got else 130

    return restore


def _cmd_predict(args: argparse.Namespace) -> int:
    from . import batch

    engine = args.engine or ("dask" if args.scheduler else "inprocess")
    if args.scheduler and engine != "dask":
        print("error: --scheduler needs --engine dask", file=sys.stderr)
        return 1
    restore = _interrupt_on_sigterm()
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
    except KeyboardInterrupt as exc:
        status = restore()
        why = (str(exc) if isinstance(exc, batch.BatchInterrupted)
               else "interrupted: rerun the same command with --resume to continue from the finished chunks")
        print(f"\n{why.replace('resume=True (--resume)', '--resume')}", file=sys.stderr)
        return status
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        restore()
    for e in res.errors:
        print(f"warning: {e}", file=sys.stderr)
    for i, e in res.failed_chunks.items():
        print(f"warning: chunk {i}: {e}", file=sys.stderr)
    for i, e in res.lost_chunks.items():
        print(f"error: chunk {i}: {e}", file=sys.stderr)
    if res.out is None:
        print(f"error: catalogue not written: {len(res.lost_chunks)} of {res.n_chunks} chunks not labelled; "
              f"the finished ones are kept in {res.work_dir}: rerun the same command with --resume",
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
            "catalogue is written, so an interrupted run (Ctrl-C, SIGTERM, a lost worker: exit status "
            "non-zero) continues with --resume. A spectrum or chunk that fails is flagged (flag bit 1, "
            "'error' column), never fatal."))
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
    p.add_argument("--work-dir", default=None,
                   help="directory in which the run makes its <out name>.parts subdirectory for the chunk "
                        "files (default: beside --out); only that subdirectory is ever removed")
    p.add_argument("--keep-parts", action="store_true", help="keep the chunk files after writing the catalogue")
    p.set_defaults(func=_cmd_predict)


# ----------------------------------------------------------------------------- tune
def _cmd_tune(args: argparse.Namespace) -> int:
    """``mdslam tune``: regenerate a tuned XP model's cached files (``--model``; default the catalogue's three)."""
    from .compendium import tracks, tuning

    return tuning.run(args, tracks.tuned_training_set(args.model))


def _add_tune(sub) -> None:
    from .compendium import tuning

    p = sub.add_parser(
        "tune", help="tune the catalogue's XP model on the tuning grid and score it by nested CV (10 outer "
                     "folds, as the papers' 10-fold CV); writes the three cached files of the package data; "
                     "--model teff_logg|alpha: a plain grid search of the two- or four-label model, one file")
    tuning.add_arguments(p)
    p.set_defaults(func=_cmd_tune)


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
