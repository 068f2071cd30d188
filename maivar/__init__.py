"""maivar: a reproducible DVC pipeline for MAiVAR (audio-image + video action recognition).

The library behind the stages in ``stages/`` (thin entry points, one per DVC stage), one subpackage per job:

- ``maivar.core``        what every stage shares: reading params.yaml, running a stage, atomic outputs, the
                         rejection vocabulary, the guarded worker pool, the manifest and the HDF5 stores
- ``maivar.settings``    typed settings: one frozen type per params.yaml section, checked once by each stage
- ``maivar.synthetic``   the embedded default dataset (stage synthesize)
- ``maivar.data``        the dataset readers (one table), media probing and ffmpeg demux, the audio-subset rule
                         (stage prepare)
- ``maivar.audio``       the audio images, one table of representations (stage render), and their backbone
                         features (stage extract_audio)
- ``maivar.video``       TSN frame sampling and decoding, the MMAction2 backbone (stage extract_video)
- ``maivar.extraction``  what both extraction stages share: checkpoints, inference (devices, BatchNorm folding,
                         precision), the journaled batch loop, resuming, data-parallel ranks
- ``maivar.heads``       the MLPs, Algorithm 1 and their training (stages train_audio, train_video, train_fusion)
- ``maivar.evaluation``  test-set metrics and per-clip predictions (stage evaluate)

Around the stages (the ``maivar`` command, :mod:`maivar.cli`): ``maivar.predict`` (the trained heads on new
videos), ``maivar.report`` (the report of a run), ``maivar.runs`` (what a run recorded, at any revision),
``maivar.presets`` (params overlays run as DVC experiments), ``maivar.stage_deps`` (``maivar check-deps``).
docs/ARCHITECTURE.md maps each stage to its modules.

dvc.yaml lists, for each stage, the modules it imports (``maivar check-deps`` verifies it), so that a change
to the code of one stage reruns that stage and those after it, and no other.
"""
