"""Stage extract_audio: audio images (data/audio_images/images.h5) -> pooled timm backbone features.

Writes data/features/audio.h5: ``features`` N x D float32, ids/labels aligned with images.h5, the input's
rejections carried over, and attributes recording the backbone, input size and weights (source, sha256).
"""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from maivar.audio_features import extract_audio_features, normalization  # noqa: E402
from maivar.backbones import compute_dtype, create_audio_backbone, prepare_for_inference, select_device  # noqa: E402
from maivar.feature_store import LazyRows, create_store, open_store  # noqa: E402
from maivar.parallel import default_workers  # noqa: E402
from maivar.params import load_params, resolve_workers  # noqa: E402
from maivar.resume import Journal, file_identity  # noqa: E402
from maivar.stage import run_stage  # noqa: E402

IMAGES = Path("data/audio_images/images.h5")
OUT = Path("data/features/audio.h5")
log = logging.getLogger("maivar.extract_audio")


def main() -> None:
    p = load_params()["extract_audio"]
    source = open_store(IMAGES, "images", load_data=False)
    device = select_device(str(p["device"]))
    model, weights = create_audio_backbone(
        str(p["backbone"]), pretrained=bool(p["pretrained"]), checkpoint=p["checkpoint"], seed=int(p["seed"])
    )
    folded = prepare_for_inference(model, device, compile_model=bool(p["compile"]),
                                   fold_batchnorm=bool(p["fuse_conv_bn"]), input_size=int(p["input_size"]))
    mean, std = normalization(model, str(p["normalization"]))
    attrs = {
        "backbone": p["backbone"], "input_size": int(p["input_size"]), "normalization": p["normalization"],
        "mean": list(mean), "std": list(std), "device": device.type, "dtype": compute_dtype(device),
        "conv_bn_folded": folded, "representation": source.attrs.get("representation"), **weights.attrs(),
    }
    # finished batches of an interrupted run with the same images and settings are reused (maivar/resume.py)
    journal = Journal(OUT, {"attrs": attrs, "batch_size": int(p["batch_size"]), "images": file_identity(IMAGES),
                            "ids": source.ids})
    images = LazyRows(IMAGES, "images")
    log.info("%d audio images -> %s at %d px on %s", len(images), p["backbone"], p["input_size"], device)
    feats = extract_audio_features(
        model, images, input_size=int(p["input_size"]), mean=mean, std=std, batch_size=int(p["batch_size"]),
        workers=resolve_workers(p["workers"]) or default_workers(), device=device, journal=journal,
    )
    images.close()
    with create_store(OUT, data_name="features", n=len(feats), item_shape=feats.shape[1:], dtype=np.float32) as w:
        if len(feats):
            w.write_rows(0, feats)
        w.finish(source.ids, source.labels, source.rejected, attrs)
    journal.discard()
    log.info("wrote %s: %d x %d features (weights: %s), %d rejected upstream", OUT, *feats.shape, weights.source,
             len(source.rejected))


if __name__ == "__main__":
    run_stage(main)
