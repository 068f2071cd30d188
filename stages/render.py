"""Stage render: one audio image per clip in the selected representation (paper Fig. 5), plus previews."""

from maivar.audio.render import render_stage
from maivar.core.stage import run_stage, stage_args
from maivar.settings.base import read_params
from maivar.settings.render import RenderSettings, representation_from_params
from maivar.settings.runtime import RuntimeSettings


def main() -> None:
    args = stage_args(__doc__, "manifest", "images", "previews")
    params = read_params(args.params)
    representation, settings = representation_from_params(params), RenderSettings.from_params(params)
    runtime = RuntimeSettings.from_params(params)
    render_stage(args.manifest, out_path=args.images, previews_dir=args.previews, representation=representation,
                 settings=settings, runtime=runtime)


if __name__ == "__main__":
    run_stage(main)
