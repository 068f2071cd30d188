"""Typed settings: one frozen type per params.yaml section, checked once, where a stage starts.

- :mod:`maivar.settings.base`        the checks (:class:`~maivar.settings.base.Int`, ...), the :class:`Section`
                                     base, reading params.yaml (:func:`~maivar.settings.base.read_params`)
- :mod:`maivar.settings.synthesize`  ``synthesize``
- :mod:`maivar.settings.data`        ``dataset``, ``prepare``
- :mod:`maivar.settings.render`      ``representation`` + ``render``
- :mod:`maivar.settings.extract`     ``extract_audio``, ``extract_video``
- :mod:`maivar.settings.heads`       ``train``, ``audio_mlp``, ``video_mlp``, ``fusion_mlp``
- :mod:`maivar.settings.runtime`     ``runtime`` (machine settings: no stage tracks them)
- :mod:`maivar.settings.check`       every section at once (``maivar check-params``)

Each stage imports only the modules of the sections it reads (so that DVC reruns only the stages whose settings
code changed) and converts them before it reads a file or builds a model. The library below never sees a raw
dict. Nothing is imported here: importing a section module stays cheap.
"""
