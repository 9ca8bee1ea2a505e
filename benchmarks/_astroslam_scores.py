"""Extract per-pixel CV-MSE and chosen hyperparameters from an astroslam model dump.

Runs in the astroslam virtual environment (old numpy/sklearn), not in mdslam's:

    $ASTROSLAM_VENV/bin/python _astroslam_scores.py astroslam_model.dump out.npz
"""
import sys

import numpy as np
from slam import Slam

s = Slam.load_dump(sys.argv[1])
best = [sm.regressor.best_params_ for sm in s.sms]
np.savez(
    sys.argv[2],
    cv_mse_scaled=-np.asarray(s.scores, float),          # GridSearchCV best_score_ = -CV-MSE
    flux_scale=np.asarray(s.tr_flux_scaler.scale_, float),
    flux_mean=np.asarray(s.tr_flux_scaler.mean_, float),
    C=np.array([b["C"] for b in best], float),
    epsilon=np.array([b["epsilon"] for b in best], float),
    gamma=np.array([b["gamma"] for b in best], float),
)
print("wrote", sys.argv[2])
