"""Stage extract_video: manifest videos -> TSN per-segment features through MMAction2.

Writes data/features/video.h5: ``features`` N x num_segments x D float32, ids/labels in manifest order,
a rejection for every manifest clip that fails to decode, and attributes recording the config, backbone,
input size, num_segments and weights (source, sha256). Independent of ``representation``.
"""

import logging
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from maivar import rejections  # noqa: E402
from maivar.backbones import build_tsn, compute_dtype, prepare_for_inference, select_device  # noqa: E402
from maivar.errors import PipelineError  # noqa: E402
from maivar.feature_store import create_store  # noqa: E402
from maivar.manifest import read_manifest  # noqa: E402
from maivar.parallel import default_workers  # noqa: E402
from maivar.params import load_params, resolve_workers  # noqa: E402
from maivar.resume import Journal, file_identity  # noqa: E402
from maivar.stage import run_stage  # noqa: E402
from maivar.video_features import VideoClip, extract_video_features, preprocessing_from_config  # noqa: E402

MANIFEST = Path("data/prepared/manifest.csv")
OUT = Path("data/features/video.h5")
log = logging.getLogger("maivar.extract_video")


def read_clips(path: Path) -> tuple[list[VideoClip], dict[str, int]]:
    clips_df = read_manifest(path, ("id", "label", "video_path"))
    frames = clips_df["frames"] if "frames" in clips_df.columns else pd.Series([None] * len(clips_df))
    clips = [
        VideoClip(i, v, int(f) if pd.notna(f) else None)
        for i, v, f in zip(clips_df["id"], clips_df["video_path"], frames)
    ]
    return clips, dict(zip(clips_df["id"], clips_df["label"].astype(int)))


def main() -> None:
    p = load_params()["extract_video"]
    clips, labels = read_clips(MANIFEST)
    num_segments = int(p["num_segments"])
    if num_segments < 1:
        raise PipelineError("extract_video.num_segments must be at least 1")
    device = select_device(str(p["device"]))
    model, weights, cfg = build_tsn(p["config"], checkpoint=p["checkpoint"], seed=int(p["seed"]))
    pre = preprocessing_from_config(cfg)
    folded = prepare_for_inference(model, device, compile_model=bool(p["compile"]),
                                   fold_batchnorm=bool(p["fuse_conv_bn"]), input_size=pre.crop_size,
                                   image_module=model.backbone)
    attrs = {
        "config": str(p["config"]), "backbone": cfg.model.backbone.get("type"),
        "backbone_depth": cfg.model.backbone.get("depth"), "input_size": pre.crop_size,
        "short_side": pre.short_side, "mean": list(pre.mean), "std": list(pre.std),
        "num_segments": num_segments, "device": device.type, "dtype": compute_dtype(device),
        "conv_bn_folded": folded, **weights.attrs(),
    }
    # finished batches of an interrupted run with the same videos and settings are reused (maivar/resume.py)
    journal = Journal(OUT, {
        "attrs": attrs, "batch_videos": int(p["batch_videos"]), "min_decoded_share": float(p["min_decoded_share"]),
        "timeout_s": float(p["timeout_s"]),
        "clips": [(c.id, c.expected_frames, *file_identity(c.path)) for c in clips],
    })
    log.info("%d videos x %d segments -> %s (short side %d, crop %d) on %s", len(clips), num_segments,
             p["config"], pre.short_side, pre.crop_size, device)
    rows, feats, rejected = extract_video_features(
        model, clips, num_segments=num_segments, pre=pre, batch_videos=int(p["batch_videos"]),
        workers=resolve_workers(p["workers"]) or default_workers(), device=device, timeout_s=float(p["timeout_s"]),
        min_decoded_share=float(p["min_decoded_share"]), journal=journal,
    )
    if clips and not rows:
        raise PipelineError(f"none of the {len(clips)} videos decoded (first: {rejected[0].reason}: {rejected[0].detail})")
    rejections.check_rejected_share(len(rejected), len(clips), float(p["max_rejected_share"]), rejected,
                                    what="videos could not be decoded", param="extract_video.max_rejected_share")
    if rejected:
        log.warning("rejected %d of %d videos: %s", len(rejected), len(clips),
                    ", ".join(f"{k} {v}" for k, v in sorted(Counter(r.reason for r in rejected).items())))
    ids = [clips[r].id for r in rows]
    with create_store(OUT, data_name="features", n=len(ids), item_shape=feats.shape[1:], dtype=np.float32) as w:
        if len(ids):
            w.write_rows(0, feats)
        w.finish(ids, [labels[i] for i in ids], rejected, attrs)
    journal.discard()
    log.info("wrote %s: %d x %d x %d features (weights: %s)", OUT, *feats.shape, weights.source)


if __name__ == "__main__":
    run_stage(main)
