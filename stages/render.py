"""Stage render: one audio image per clip in the selected representation (paper Fig. 5), plus previews."""

from maivar.audio.render import render_stage
from maivar.core.params import load_params, runtime_settings
from maivar.core.stage import run_stage, stage_args


def main() -> None:
    args = stage_args(__doc__, "manifest", "images", "previews")
    params = load_params(args.params)
    render_stage(args.manifest, out_path=args.images, previews_dir=args.previews,
                 representation=params.get("representation"), render_params=params["render"],
                 runtime=runtime_settings(params, "render"))


if __name__ == "__main__":
    run_stage(main)
