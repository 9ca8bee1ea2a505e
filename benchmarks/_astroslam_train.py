"""Train astroslam on a (pixel-subset) training set with a given grid; runs in the astroslam venv.

    $ASTROSLAM_VENV/bin/python _astroslam_train.py data.npz grid.json n_jobs out.json

``data.npz`` holds ``wave``, ``flux``, ``ivar``, ``labels``; ``grid.json`` holds ``C``,
``epsilon``, ``gamma`` (lists) and ``cv`` (int, astroslam's unshuffled k-fold).  Writes the
training time and the per-pixel CV-MSE (standardised) and chosen hyperparameters.
"""
import json
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")
from slam import Slam  # noqa: E402

d = np.load(sys.argv[1])
spec = json.load(open(sys.argv[2]))
n_jobs = int(sys.argv[3])
grid = {k: list(map(float, spec[k])) for k in ("C", "epsilon", "gamma")}
s = Slam(d["wave"], d["flux"].copy(), d["ivar"].copy(), d["labels"].copy())
t0 = time.perf_counter()
s.train_pixels(method="grid", model="svr", param_grid=grid, cv=int(spec["cv"]), n_jobs=n_jobs, verbose=0)
dt = time.perf_counter() - t0
best = [sm.regressor.best_params_ for sm in s.sms]
json.dump({"train_s": dt, "n_pix": int(d["flux"].shape[1]), "n_star": int(d["flux"].shape[0]),
           "n_jobs": n_jobs, "cv_mse_scaled": (-np.asarray(s.scores, float)).tolist(),
           **{k: [b[k] for b in best] for k in grid}}, open(sys.argv[4], "w"), indent=1)
print("wrote", sys.argv[4])
