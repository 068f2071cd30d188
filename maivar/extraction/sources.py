"""The known weights (``maivar weights list|fetch``): where each is published, how to check the download, its
licence, and what to set in params.yaml to use it.

``fetch`` streams a download into ``weights/`` (never into memory; checked before it is renamed into place).
A checksum is the full sha256 where one is published; OpenMMLab and pretrainedmodels publish only the first hex
digits of it in the file name (``..._20220906-cd10898e.pth``: torch.hub's ``check_hash`` convention), which is
checked as the prefix it is; where nothing is published (Hugging Face's timm files are checked by the hub's own
client) the download's sha256 is printed, and the weights stage records it either way.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from maivar.core.atomic import atomic_path
from maivar.core.errors import PipelineError

BLOCK = 1 << 20


@dataclass(frozen=True)
class KnownWeights:
    name: str
    modality: str  # audio | video
    what: str
    url: str
    sha256: str | None  # full, or the published prefix; None where nothing is published
    licence: str
    params: tuple[tuple[str, str], ...]  # params.yaml settings to use it ({file}: where fetch put it)
    then: str | None = None  # a command to run on the download first (e.g. a layout conversion)


KNOWN: dict[str, KnownWeights] = {w.name: w for w in (
    KnownWeights(
        "inception_resnet_v2.tf_in1k", "audio",
        "Inception-ResNet-v2, ImageNet-1k (timm's tag tf_in1k, ported from TF-slim): the paper's audio backbone; "
        "or from timm's cache: extract_audio.backbone: inception_resnet_v2.tf_in1k, pretrained: true",
        "https://huggingface.co/timm/inception_resnet_v2.tf_in1k/resolve/main/model.safetensors", None,
        "Apache-2.0 (timm; TF-slim's weights, Apache-2.0)",
        (("extract_audio.backbone", "inception_resnet_v2"), ("extract_audio.checkpoint", "{file}")),
    ),
    KnownWeights(
        "tsn_r50_k400", "video",
        "MMAction2 TSN ResNet-50, ImageNet-pretrained, 1x1x3 100e on Kinetics-400 RGB (70.6 % top-1)",
        "https://download.openmmlab.com/mmaction/v1.0/recognition/tsn/"
        "tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb/"
        "tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb_20220906-cd10898e.pth", "cd10898e",
        "Apache-2.0 (MMAction2's model zoo; trained on Kinetics-400, whose videos are YouTube's)",
        (("extract_video.config", "configs/tsn_r50_video.py"), ("extract_video.checkpoint", "{file}")),
    ),
    KnownWeights(
        "bninception_imagenet", "video",
        "BN-Inception, ImageNet (the PyTorch port, pretrainedmodels' bninception): the paper's TSN backbone",
        "http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth", "52deb4733",
        "BSD-3-Clause (Cadene's pretrainedmodels port of the Caffe model of TSN's authors)",
        (("extract_video.config", "configs/tsn_bninception_video.py"),
         ("extract_video.checkpoint", "{file}.mmaction.pth")),
        then="maivar convert-bninception {file} {file}.mmaction.pth",
    ),
)}


def file_name(known: KnownWeights) -> str:
    return f"{known.name}{Path(known.url).suffix or '.bin'}"


def fetch(known: KnownWeights, directory: str | Path, *, timeout: float = 60,
          progress: bool = True) -> tuple[Path, str]:
    """Download ``known`` into ``directory`` (streamed, sha256 computed on the way, checked against the published
    one before the file is renamed into place); returns (path, sha256). A file already there whose sha256 checks
    is kept, not downloaded again."""
    from tqdm import tqdm

    path = Path(directory) / file_name(known)
    if path.is_file():
        digest = file_sha256(path)
        if _matches(known, digest):
            return path, digest
    try:
        response = urllib.request.urlopen(known.url, timeout=timeout)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PipelineError(f"cannot download {known.url} ({getattr(exc, 'reason', exc)}): download it where there "
                            f"is network access and place it at {path}") from None
    digest = hashlib.sha256()
    total = response.headers.get("Content-Length")
    with response, atomic_path(path) as tmp, open(tmp, "wb") as out, \
            tqdm(total=int(total) if total and total.isdigit() else None, unit="B", unit_scale=True,
                 desc=path.name, disable=not progress) as bar:
        while block := response.read(BLOCK):
            out.write(block)
            digest.update(block)
            bar.update(len(block))
        if not _matches(known, digest.hexdigest()):
            raise PipelineError(f"{known.url} gave a file whose sha256 {digest.hexdigest()} does not start with the "
                                f"published {known.sha256}: not kept (a changed or damaged download)")
    return path, digest.hexdigest()


def _matches(known: KnownWeights, digest: str) -> bool:
    return known.sha256 is None or digest.startswith(known.sha256)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (memory does not grow with the file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()
