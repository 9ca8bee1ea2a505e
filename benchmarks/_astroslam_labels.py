"""CPU time per spectrum of astroslam's labelling (quick start + optimiser) from a model dump.

Runs in the astroslam virtual environment, single process (as its benchmark labels, ``n_jobs=1``):

    $ASTROSLAM_VENV/bin/python _astroslam_labels.py astroslam_model.dump synth.npz n_test out.json

The same calls as ``$ASTROSLAM_BENCH_DIR/bench_astroslam.py`` (``training_nmse`` first, which
labelling needs), timed by this process's CPU clock as well as the wall clock.
"""
import json
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")
from slam import Slam  # noqa: E402

s = Slam.load_dump(sys.argv[1])
d = np.load(sys.argv[2])
n = int(sys.argv[3])
s.training_nmse(n_jobs=1, verbose=0)
f, iv, lab = d["te_flux"][:n].copy(), d["te_ivar"][:n].copy(), d["te_labels"][:n]
c0, t0 = time.process_time(), time.perf_counter()
X0 = s.predict_labels_quick(f.copy(), iv.copy(), n_jobs=1)
r = s.predict_labels_multi(X0, f.copy(), iv.copy(), n_jobs=1)
cpu, wall = (time.process_time() - c0) / n, (time.perf_counter() - t0) / n
x = np.array([_["x"] for _ in r])
json.dump({"labels_cpu_per_spec_s": cpu, "labels_wall_per_spec_s": wall,
           "rms": np.sqrt(((x - lab) ** 2).mean(0)).round(4).tolist()}, open(sys.argv[4], "w"), indent=1)
print("wrote", sys.argv[4])
