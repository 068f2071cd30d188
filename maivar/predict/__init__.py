"""``maivar predict``: the trained heads on new videos, through exactly the pipeline's preprocessing.

- :mod:`maivar.predict.run`     what a run recorded (its three heads, and the settings and weights that made their
                                features), read from the workspace or from a git revision / DVC experiment
- :mod:`maivar.predict.engine`  one video -> demux, audio image, both frozen backbones, the three heads
- :mod:`maivar.predict.output`  the videos to predict (files, folders, globs) and the table / JSON / CSV output

Not a stage: nothing here is a DVC output, and the stages never import it.
"""
