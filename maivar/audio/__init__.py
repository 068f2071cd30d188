"""The audio branch: the audio images (stage render) and their frozen-backbone features (stage extract_audio).

Stage render, one module per job: :mod:`~maivar.audio.representations` (the table of representations: the
paper's six and ours), :mod:`~maivar.audio.wav` (reading a clip's audio), :mod:`~maivar.audio.spectra` (the
features), :mod:`~maivar.audio.raster` (pixel mapping, colors, layers), :mod:`~maivar.audio.drawing` (one clip's
image, recipe ``corrected``), :mod:`~maivar.audio.pymaivar` (recipe ``pymaivar``, the authors' drawing) and
:mod:`~maivar.audio.render` (the stage). Stage extract_audio: :mod:`~maivar.audio.features`.
"""
