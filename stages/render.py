"""Stage render: one audio image per clip in the selected representation (paper Fig. 5), plus previews.

Reads data/prepared/manifest.csv and its WAVs; writes data/audio_images/images.h5 and
data/audio_images/previews/<class_name>__<id>.png. Parameters: `representation` and the `render` section.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maivar.params import check_representation, load_params, resolve_workers  # noqa: E402
from maivar.stage import run_stage  # noqa: E402

MANIFEST = "data/prepared/manifest.csv"
IMAGES = "data/audio_images/images.h5"
PREVIEWS = "data/audio_images/previews"


def main() -> None:
    params = load_params()
    representation = check_representation(params.get("representation"))
    import librosa

    from maivar.render_stage import read_manifest, render_manifest

    render_params = params["render"]
    render_manifest(
        read_manifest(MANIFEST),
        representation=representation,
        render_params=render_params,
        workers=resolve_workers(render_params.get("workers")),
        out_path=IMAGES,
        previews_dir=PREVIEWS,
        librosa_version=librosa.__version__,
    )


if __name__ == "__main__":
    run_stage(main)
