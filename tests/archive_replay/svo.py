"""Replay of the SVO Theoretical Spectra server (BT-Settl CIFIST) for ``mdslam.modelgrid``.

The file layout follows the SVO server's documented formats: the SSA index
``ssap.php?model=<model>`` is a VOTable whose rows carry the model's access
reference (``...&fid=<n>``) and a title ``teff:<v>, logg:<v>, meta:<v>``; a
spectrum ``ssap.php?model=<model>&fid=<n>&format=ascii`` is a ``#`` header of
``name = value unit (description)`` lines and ``# column k: NAME (UNIT),
description`` lines, then two columns WAVELENGTH (Angstrom) and FLUX
(erg/cm2/s/A) (as read by public SVO clients, e.g. ``dustapprox.io.svo``).

The flux is a stand-in, not a model atmosphere: a Planck curve at Teff with a
few Gaussian absorption bands whose depth grows as Teff falls, on an irregular
wavelength sampling (as the model files have).
"""

from __future__ import annotations

import numpy as np

from .server import ReplayServer, Reply, Request

MODEL = "bt-settl-cifist"

#: (fid, teff, logg, meta) of the replayed models.
MODELS = [
    (101, 2900.0, 5.0, 0.0),
    (102, 3000.0, 5.0, 0.0),
    (103, 3100.0, 5.0, 0.0),
    (104, 3000.0, 4.5, 0.0),
    (105, 3000.0, 5.0, -0.5),
    (106, 5000.0, 4.5, 0.0),
]

BROKEN_FID = 103
"""A model whose spectrum request returns an HTML error page (to test skipping)."""


def index_votable(base: str, models=MODELS, model: str = MODEL) -> bytes:
    rows = "\n".join(
        f"<TR><TD>{base}/ssap.php?model={model}&amp;fid={fid}&amp;format=ascii</TD>"
        f"<TD>application/ascii</TD><TD>teff:{t:g}, logg:{g:g}, meta:{m:g}</TD></TR>"
        for fid, t, g, m in models
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<VOTABLE version="1.1"><RESOURCE type="results"><INFO name="QUERY_STATUS" value="OK"/>
<TABLE><FIELD name="Access.Reference" datatype="char" arraysize="*" utype="ssa:Access.Reference"/>
<FIELD name="Access.Format" datatype="char" arraysize="*"/>
<FIELD name="Title" datatype="char" arraysize="*"/>
<DATA><TABLEDATA>
{rows}
</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>
""".encode()


def spectrum_flux(wave: np.ndarray, teff: float) -> np.ndarray:
    """Planck F_lambda at ``teff`` times absorption bands deepening with falling Teff."""
    h, c, k = 6.62607015e-27, 2.99792458e10, 1.380649e-16
    lam = wave * 1e-8
    planck = 2 * h * c**2 / lam**5 / np.expm1(h * c / (lam * k * teff)) * 1e-8
    depth = np.clip((4000.0 - teff) / 1500.0, 0.0, 1.0)
    bands = sum(0.6 * depth * np.exp(-0.5 * ((wave - c0) / w) ** 2)
                for c0, w in ((7100.0, 40.0), (7700.0, 8.0), (8200.0, 6.0)))
    return np.pi * planck * (1.0 - bands)


def spectrum_ascii(teff: float, logg: float, meta: float) -> bytes:
    rng = np.random.default_rng(int(teff + 10 * logg))
    wave = np.sort(np.concatenate([np.arange(5000.0, 10000.0, 0.5), rng.uniform(5000.0, 10000.0, 500)]))
    wave = np.unique(np.round(wave, 3))
    flux = spectrum_flux(wave, teff)
    head = (
        "# BT-Settl CIFIST 2011b (stand-in for tests)\n"
        f"# teff = {teff:g} K (value for the effective temperature for the model. Temperatures are given in K)\n"
        f"# logg = {logg:g} log(cm/s2) (value for Log(G) for the model.)\n"
        f"# meta = {meta:g}  (value for the Metallicity for the model.)\n"
        "#\n"
        "# column 1: WAVELENGTH (ANGSTROM), Wavelength in Angstrom\n"
        "# column 2: FLUX (ERG/CM2/S/A), Flux in erg/cm2/s/A\n"
    )
    body = "\n".join(f"{w:12.3f} {f:14.6e}" for w, f in zip(wave[::-1], flux[::-1], strict=True))
    return (head + body + "\n").encode()


def add_svo_routes(srv: ReplayServer, models=MODELS, model: str = MODEL) -> None:
    """Routes ``/ssap.php`` on ``srv``: the index without ``fid``, a spectrum with it."""
    by_fid = {fid: (t, g, m) for fid, t, g, m in models}

    def handler(req: Request) -> Reply:
        if req.query.get("model", [""])[0] != model:
            return Reply(404, b"unknown model")
        fid = req.query.get("fid")
        if not fid:
            return Reply(200, index_votable(srv.url, models, model), {"Content-Type": "text/xml"})
        fid_i = int(fid[0])
        if fid_i == BROKEN_FID:
            return Reply(200, b"<html><body>Error: spectrum not available</body></html>",
                         {"Content-Type": "text/html"})
        if fid_i not in by_fid:
            return Reply(404, b"no such fid")
        return Reply(200, spectrum_ascii(*by_fid[fid_i]), {"Content-Type": "text/plain"})

    srv.route("GET", r"/ssap\.php", handler)
