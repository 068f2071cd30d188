"""What the two extraction stages share: the backbones' weights (:mod:`~maivar.extraction.checkpoints`), running
them for inference (:mod:`~maivar.extraction.inference`: device, BatchNorm folding, precision, out-of-memory
halving), the journaled batch loop and the store assembled from it (:mod:`~maivar.extraction.job`), data
parallelism (:mod:`~maivar.extraction.data_parallel`) and the journal that resumes an interrupted extraction
(:mod:`~maivar.extraction.resume`). The backbones are built where their modality lives:
:func:`maivar.audio.backbone.build_audio_backbone`, :func:`maivar.video.tsn.build_video_backbone`."""
