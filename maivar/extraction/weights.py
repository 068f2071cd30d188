"""Stages weights_audio and weights_video: each backbone's weights resolved into the workspace as one file that
DVC tracks.

The extract stages read their weights only from these files (``data/weights/audio.safetensors``,
``data/weights/video.safetensors``, named in dvc.yaml) and depend on them, so weights that change, however they
change, rerun exactly the extraction and what follows it:

- a checkpoint replaced in place (``extract_*.checkpoint``: same path, other bytes);
- timm's pretrained weights that moved (another default tag after a timm upgrade: another hub id or file);
- another architecture (``extract_audio.backbone``, ``extract_video.config`` and its bytes) or seed.

A weights file is safetensors: the state dict of the module that makes the features (the timm model; the
TSN's backbone) and one metadata entry, ``maivar``, a sorted JSON object: the :class:`WeightsRequest`
it answers, where its bytes came from (:class:`Source`: the checkpoint's or timm's file and its sha256) and the
state's :func:`~maivar.extraction.checkpoints.weights_sha256`. One entry, so the file's bytes are the same on
every run (safetensors writes a metadata map in no fixed order).

The stage runs on every ``dvc repro`` (``always_changed``) and is cheap when nothing changed: it reads the
existing file's header and hashes the source file (a 215 MB checkpoint: ~0.3 s), and leaves the file untouched
when both still match. When the source is not on this machine (a clone that pulled its outputs: the
checkpoint or timm's cache is elsewhere) it keeps the file whose recorded request matches, and says so; with no
file and no source it stops with one line naming the file to place and where (:mod:`maivar.extraction.sources`
lists the known sources, ``maivar weights fetch`` downloads them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from maivar.core.atomic import atomic_path
from maivar.core.errors import PipelineError

from .sources import file_sha256

if TYPE_CHECKING:  # this module imports no torch: the weights stages check their files without it
    import torch
    from torch import nn

    from maivar.settings.extract import ExtractAudioSettings

    from .checkpoints import Weights

log = logging.getLogger(__name__)

FORMAT = "maivar-weights/1"
META_KEY = "maivar"
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own bound on a header


@dataclass(frozen=True)
class WeightsRequest:
    """What params.yaml asks of one backbone's weights: the weights stage's parameters.

    ``architecture`` is a timm model name (audio) or an MMAction2 config path (video, whose bytes are
    ``architecture_sha256``); ``seed`` matters only for a random initialization and is ``None`` otherwise, so
    changing it (it also seeds ``extract_audio.flips: authors``) leaves a loaded checkpoint's file as it is."""

    modality: str  # audio | video
    architecture: str
    architecture_sha256: str | None
    pretrained: bool
    checkpoint: str | None
    seed: int | None

    @property
    def setting(self) -> str:
        return f"extract_{self.modality}"

    @property
    def kind(self) -> str:
        return "checkpoint" if self.checkpoint else "timm" if self.pretrained else "random"


@dataclass(frozen=True)
class Source:
    """Where a request's weights are on this machine: ``file`` (None for a random initialization, or where the
    file is not here) and the sha256 of its bytes; ``ident`` names it (``random``, ``timm:<hub id>``,
    ``checkpoint:<path>``)."""

    ident: str
    file: str | None
    sha256: str | None

    @property
    def present(self) -> bool:
        return self.ident == "random" or self.file is not None


def audio_weights_request(settings: ExtractAudioSettings) -> WeightsRequest:
    """What ``extract_audio`` asks of the weights (stage weights_audio's parameters)."""
    checkpoint = settings.checkpoint or None
    random = not checkpoint and not settings.pretrained
    return WeightsRequest("audio", settings.backbone, None, bool(settings.pretrained) and not checkpoint, checkpoint,
                          settings.seed if random else None)


# ---------------------------------------------------------------------------------------------- the sources


def timm_source(name: str) -> Source:
    """timm's pretrained weights of ``name`` (a model name, optionally ``.tag``): its hub id (or URL) and the file
    in timm's cache, without any network access; ``file`` is None when the cache does not hold it."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise PipelineError(f"timm has no pretrained weights for {name!r} (extract_audio.backbone): set "
                            "extract_audio.pretrained: false or a checkpoint")
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        repo, _, revision = cfg.hf_hub_id.partition("@")
        for filename in names:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str) and Path(found).is_file():
                return Source(f"timm:{cfg.hf_hub_id}", found, file_sha256(found))
        return Source(f"timm:{cfg.hf_hub_id}", None, None)
    if cfg.url:
        from timm.models._hub import get_cache_dir

        cached = Path(get_cache_dir()) / Path(cfg.url).name
        return Source(f"timm:{cfg.url}", str(cached), file_sha256(cached)) if cached.is_file() else \
            Source(f"timm:{cfg.url}", None, None)
    raise PipelineError(f"timm's pretrained weights for {name!r} name no hub id or URL: set extract_audio.checkpoint")


def locate_source(request: WeightsRequest) -> Source:
    """The request's source on this machine (:class:`Source`)."""
    if request.kind == "checkpoint":
        path = Path(request.checkpoint)
        found = path.is_file()
        return Source(f"checkpoint:{request.checkpoint}", str(path) if found else None,
                      file_sha256(path) if found else None)
    if request.kind == "timm":
        return timm_source(request.architecture)
    return Source("random", None, None)


# ---------------------------------------------------------------------------------------------- the file


def read_meta(path: str | Path) -> dict | None:
    """The ``maivar`` metadata of a weights file, from its safetensors header alone (8 bytes of little-endian
    length, then that much JSON; no tensor read, no torch), or None when the file is absent or not one."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size <= MAX_HEADER or size + 8 > path.stat().st_size:
                return None
            header = json.loads(f.read(size))
        found = json.loads(header["__metadata__"][META_KEY])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if isinstance(found, dict) and found.get("format") == FORMAT else None


def _meta(request: WeightsRequest, source: Source, weights: Weights) -> dict:
    return {"format": FORMAT, "request": asdict(request), "source": source.ident, "source_sha256": source.sha256,
            "origin": weights.source, "pretrained": weights.pretrained, "weights_sha256": weights.sha256}


def write_weights_file(path: str | Path, state: dict[str, torch.Tensor], meta: dict) -> None:
    """Write ``state`` and ``meta`` (one sorted JSON entry) atomically: the same inputs give the same bytes."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta, sort_keys=True, separators=(",", ":"))})


def stale_reason(meta: dict | None, request: WeightsRequest, source: Source) -> str | None:
    """Why a weights file with ``meta`` does not hold what ``request`` asks (None: it does). A source that is not
    on this machine is taken on the file's word (the caller says so)."""
    if meta is None:
        return "no weights file yet"
    if meta["request"] != asdict(request):
        old = meta["request"]
        changed = sorted(k for k in old.keys() | asdict(request).keys() if old.get(k) != asdict(request).get(k))
        return f"params changed ({', '.join(changed)})"
    if source.present and source.sha256 != meta.get("source_sha256"):
        return f"{source.ident} changed (sha256 {str(meta.get('source_sha256'))[:12]} -> {str(source.sha256)[:12]})"
    return None


BuildState = Callable[[WeightsRequest], tuple]  # request -> (state dict of tensors, Weights)


def resolve_weights(path: str | Path, request: WeightsRequest, build: BuildState) -> bool:
    """Make ``path`` hold the weights ``request`` asks for; returns whether it was (re)written.

    ``build(request)`` loads or initializes them (the modality's own builder: the state dict and its
    :class:`Weights`); it is called only when the file is missing or stale (:func:`stale_reason`)."""
    path = Path(path)
    meta = read_meta(path)
    source = locate_source(request)
    reason = stale_reason(meta, request, source)
    if reason is None:
        if source.present:
            log.info("%s weights: %s is current (%s, sha256 %s): kept", request.modality, path, source.ident,
                     meta["weights_sha256"][:12])
        else:
            log.warning("%s weights: %s is not on this machine: keeping %s, made from it (sha256 %s)",
                        request.modality, source.ident, path, str(meta.get("source_sha256"))[:12])
        return False
    if not source.present and request.kind == "checkpoint":
        raise PipelineError(missing_source_message(request, path))
    # (timm's weights not in its cache: the builder lets timm download them, or stops with one line saying so)
    log.info("%s weights: %s -> %s (%s)", request.modality, source.ident, path, reason)
    state, weights = build(request)
    if request.kind == "timm":  # timm just filled its cache: record the file it read
        source = locate_source(request)
    write_weights_file(path, state, _meta(request, source, weights))
    return True


def missing_source_message(request: WeightsRequest, path: Path) -> str:
    """One line for a checkpoint that is not here, naming the file to place and where."""
    return (f"{request.setting}.checkpoint {request.checkpoint} does not exist and {path} holds no weights made "
            f"from it: place the checkpoint at {request.checkpoint} (`maivar weights list` names the known ones "
            f"and `maivar weights fetch NAME` downloads one), or set {request.setting}.checkpoint")


# ---------------------------------------------------------------------------------------------- the reader


def load_weights_file(path: str | Path, request: WeightsRequest | None, module: nn.Module, *,
                      modality: str = "") -> Weights:
    """Load the weights file at ``path`` into ``module`` and return where they came from, as the file records it.
    One line when the file is missing, was made for another ``request`` (``params.yaml`` changed since the
    weights stage ran; None: not checked, for ``maivar predict``, which compares the weights' sha256 with the
    run's store instead) or was altered after it was written."""
    modality = request.modality if request is not None else modality
    from safetensors.torch import load_file

    from .checkpoints import Weights, state_dict_sha256

    path = Path(path)
    meta = read_meta(path)
    if meta is None:
        raise PipelineError(f"{path} is missing or is not a maivar weights file: run `dvc repro` (stage "
                            f"weights_{modality} writes it)")
    reason = stale_reason(meta, request, Source("", None, None)) if request is not None else None
    if reason is not None:
        raise PipelineError(f"{path} holds weights for other settings ({reason.removeprefix('params changed ')}): "
                            f"run `dvc repro` (stage weights_{modality} rewrites it)")
    state = load_file(str(path), device="cpu")
    if state_dict_sha256(state) != meta["weights_sha256"]:
        raise PipelineError(f"{path} was altered after the weights stage wrote it (its tensors do not match the "
                            "sha256 it records): run `dvc checkout` or `dvc repro`")
    own = module.state_dict()
    if set(own) != set(state) or any(tuple(own[k].shape) != tuple(v.shape) for k, v in state.items()):
        raise PipelineError(f"{path} does not fit the {modality} backbone: run `dvc repro`")
    module.load_state_dict(state, strict=True)
    return Weights(meta["origin"], bool(meta["pretrained"]), meta["weights_sha256"])


def verify_weights_file(path: str | Path, request: WeightsRequest) -> tuple[bool, str]:
    """``maivar weights verify``: (whether the weights file at ``path`` holds what ``request`` asks, one line on
    it). Checks what the weights stage checks (the request, the source's sha256 where the source is here) and the
    tensors against the sha256 the file records."""
    from safetensors.torch import load_file

    from .checkpoints import state_dict_sha256

    meta = read_meta(path)
    source = locate_source(request)
    reason = stale_reason(meta, request, source)
    if reason is not None:
        return False, f"{reason}: run `dvc repro`"
    if state_dict_sha256(load_file(str(path), device="cpu")) != meta["weights_sha256"]:
        return False, "its tensors do not match the sha256 it records (altered): run `dvc checkout` or `dvc repro`"
    return True, "ok" if source.present else f"ok on the file's word ({source.ident} is not on this machine)"
