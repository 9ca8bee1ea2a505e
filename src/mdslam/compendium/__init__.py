"""The compendium layer: what the book's chapters call.

* :mod:`mdslam.compendium.inputs`: each chapter input from the public archives
  (``data_mode="archive"``), returning the same types as the offline path;
* :mod:`mdslam.compendium.tracks`: the data tracks (Gaia XP, LAMOST) and their
  training sets, cached models and cross-validated labels;
* :mod:`mdslam.compendium.tuning`: the catalogue's tuned XP model, its per-pixel
  hyperparameters and nested-CV table cached in the package (``mdslam tune``);
* :mod:`mdslam.compendium.chapter`: the helpers every chapter needs (the
  ``data_mode`` facade :func:`~mdslam.compendium.chapter.load`);
* :mod:`mdslam.compendium.comparisons`, :mod:`~mdslam.compendium.clusters`,
  :mod:`~mdslam.compendium.binaries`, :mod:`~mdslam.compendium.calibration`,
  :mod:`~mdslam.compendium.cataloguing`: the analysis steps of chapters 4, 5, 6, 7 and 8;
* :mod:`mdslam.compendium.build`: papermill + jupyter-book (``mdslam book``).

This layer may import the core and the data/services layers; nothing below it
imports it.
"""
