"""maivar: a reproducible DVC pipeline for MAiVAR (audio-image + video action recognition).

Library modules, one job each (the stages in ``stages/`` are thin entry points over them):

- ``params``        load and validate ``params.yaml`` (the one source of truth)
- ``stage``         run a stage: logging, one-line errors, SIGTERM -> clean exit
- ``atomic``        write outputs to a temporary path and rename them into place
- ``rejections``    the reason codes shared by every stage's rejection list
- ``parallel``      a process pool with per-item timeouts that survives hung or crashing workers
- ``feature_store`` the HDF5 files that carry images and features between stages
"""

__version__ = "0.1.0"
