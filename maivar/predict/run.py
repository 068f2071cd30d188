"""What a trained run recorded: its three heads, and everything that made the features they were trained on.

A *run* is the workspace (what ``dvc repro`` left there) or a revision: a git commit, branch or tag, or a DVC
experiment's name (``dvc exp show``), read through DVC's file system (git for the code and dvc.lock, the local
DVC cache for the models and stores).

Nothing is re-read from today's params.yaml. The settings come from the run's own records:

- the models (``models/*_mlp.pt``): weights, normalization, classes, how the video features enter
  (``segments``); the audio and video models also carry the attributes of the features they were trained on,
  which must be those of the stores (else the models are stale: an error);
- the stores' attributes: ``images.h5`` the representation and every ``render.*`` setting, ``audio.h5`` and
  ``video.h5`` every ``extract_audio.*`` / ``extract_video.*`` setting (read back through the settings' own
  checks, :meth:`~maivar.settings.base.Section.from_attrs`) and what the stage resolved from them: mean/std,
  weights, BatchNorm layers folded, and the TSN config's short side, crop and channel order (docs/CONTRACTS.md);
- the run's ``dvc.lock`` for what no store records: how ``prepare`` demuxed and checked the audio (sample
  rate, channels, silence threshold, minimum coverage, frame check) and the heads' thread count
  (``train.threads``).

The backbones rebuilt from these must hash (:func:`~maivar.extraction.checkpoints.weights_sha256`) to the
``weights_sha256`` their store records: a run can only be used with the very weights that made its features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import yaml

from maivar.core.errors import PipelineError
from maivar.core.params import ParamsLoader
from maivar.evaluation import HEADS
from maivar.heads.mlp import MLP
from maivar.heads.model_files import load_model
from maivar.runs import RunFiles, read_paths
from maivar.settings.base import Section, decoded_attr
from maivar.settings.data import PrepareSettings
from maivar.settings.extract import ExtractAudioSettings, ExtractVideoSettings
from maivar.settings.render import RenderSettings

LOCKED_STAGES = ("prepare",)  # what made the audio the features were drawn from: required
OPTIONAL_STAGES = ("evaluate", "train_fusion")  # where train.threads is read (evaluate's first), else 1


@dataclass(frozen=True)
class AudioBranch:
    """How the run turned a video's sound into audio features: the settings of prepare, render and extract_audio
    as the run recorded them, and what extract_audio resolved from its settings."""

    prepare: PrepareSettings  # the demux and the audio-subset checks (maivar.data.subset.examine_video)
    representation: str
    render: RenderSettings  # as images.h5 records them (render.*)
    librosa_version: str | None
    settings: ExtractAudioSettings  # as audio.h5 records them (extract_audio.*)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: str  # random | timm-pretrained | checkpoint:<path>
    sha256: str
    folded: int  # BatchNorm layers the stage folded into convolutions (0: none)


@dataclass(frozen=True)
class VideoBranch:
    """How the run turned a video's picture into TSN segment features (extract_video)."""

    settings: ExtractVideoSettings  # as video.h5 records them (config: a path relative to the repository)
    # what the stage resolved from them: the config's preprocessing, the weights, the BatchNorm layers folded
    short_side: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str
    weights: str
    sha256: str
    folded: int


@dataclass
class TrainedRun:
    """A run's heads (eval mode) and branches; ``files`` fetches the code and weights files the backbones need."""

    name: str  # "workspace" or the revision as given
    heads: dict[str, MLP]
    saved: dict[str, dict]  # the whole saved dict of each model file
    classes: list[str]
    segments: str  # how the video features enter the video and fusion heads (mean | flatten)
    audio: AudioBranch
    video: VideoBranch
    threads: int  # train.threads of the run's evaluate: the heads run with it, as evaluate did
    files: RunFiles = field(repr=False)
    weights_files: dict[str, str] = field(default_factory=dict)  # modality -> the run's weights file, where it has one

    def close(self) -> None:
        self.files.close()


def read_locked_params(files: RunFiles) -> dict[str, dict]:
    """``{stage: params}`` of the run's dvc.lock (params.yaml's sections as each stage last ran with them), for the
    stages of :data:`LOCKED_STAGES` (required) and those of :data:`OPTIONAL_STAGES` that it records."""
    text = files.read_text("dvc.lock")
    where = "workspace" if files.rev is None else f"revision {files.rev}"
    if not text:
        raise PipelineError(f"the {where} has no dvc.lock: run the pipeline (dvc repro) before predicting with it")
    stages = (yaml.load(text, Loader=ParamsLoader) or {}).get("stages") or {}
    locked = {}
    for stage in (*LOCKED_STAGES, *OPTIONAL_STAGES):
        if stage not in stages:
            if stage in LOCKED_STAGES:
                raise PipelineError(f"dvc.lock of the {where} records no run of stage {stage}: run dvc repro first")
            continue
        params = (stages[stage].get("params") or {}).get("params.yaml") or {}
        flat: dict = {}
        for key, value in params.items():  # "train.threads: 1" and "prepare: {...}" alike
            node = flat
            *parents, last = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
        locked[stage] = flat
    return locked


def read_store_attrs(files: RunFiles, path: str) -> dict:
    """A store's attributes (decoded); a missing or incomplete store is a one-line error."""
    if not files.exists(path):
        where = "" if files.rev is None else f" in revision {files.rev}"
        raise PipelineError(f"{path} does not exist{where}: run the pipeline (dvc repro) first")
    try:
        with files.open(path) as f, h5py.File(f, "r") as h5:
            attrs = {k: decoded_attr(v) for k, v in h5.attrs.items()}
    except OSError as exc:
        raise PipelineError(f"{path} is not a readable HDF5 store ({exc})") from None
    if not attrs.get("complete", False):
        raise PipelineError(f"{path} is incomplete (its writer was interrupted): rerun dvc repro")
    return attrs


def _load_head(files: RunFiles, path: str) -> tuple[MLP, dict]:
    if not files.exists(path):
        where = "" if files.rev is None else f" in revision {files.rev}"
        raise PipelineError(f"{path} does not exist{where}: train the heads first (dvc repro)")
    return load_model(files.local(path))


def _section(locked: dict, stage: str, name: str) -> dict:
    section = locked[stage].get(name)
    if not isinstance(section, dict):
        raise PipelineError(f"dvc.lock records no {name} parameters for stage {stage}: rerun dvc repro")
    return section


def _need(attrs: dict, key: str, path: str):
    if key not in attrs:
        raise PipelineError(f"{path} does not record {key!r}: it was made by an older maivar, rerun dvc repro")
    return attrs[key]


def _settings(kind: type[Section], attrs: dict, path: str):
    """The settings of the stage that made a store, as the store records them (``<section>.<key>``)."""
    if not any(k.startswith(f"{kind.SECTION}.") for k in attrs):
        raise PipelineError(f"{path} does not record its {kind.SECTION} settings: it was made by an older maivar, "
                            "rerun dvc repro")
    return kind.from_attrs(attrs, where=path)


def audio_branch(images: dict, features: dict, locked: dict, paths: dict) -> AudioBranch:
    ip, fp = paths["images"], paths["audio_features"]
    representation = _need(images, "representation", ip)
    if features.get("representation") != representation:
        raise PipelineError(f"{fp} holds features of {features.get('representation')!r} images but {ip} holds "
                            f"{representation!r} images: the stores are out of step, rerun dvc repro")
    # Everything is read through the settings types: a store or lock of an older maivar that lacks a setting is a
    # one-line error (rerun dvc repro), never a guess.
    settings = _settings(ExtractAudioSettings, features, fp)
    render = _settings(RenderSettings, images, ip)
    prepare = PrepareSettings.from_mapping(_section(locked, "prepare", "prepare"), where="dvc.lock (stage prepare)")
    return AudioBranch(
        prepare=prepare, representation=representation, render=render,
        librosa_version=images.get("librosa_version"), settings=settings,
        mean=tuple(map(float, _need(features, "mean", fp))), std=tuple(map(float, _need(features, "std", fp))),
        weights=str(_need(features, "weights", fp)), sha256=str(_need(features, "weights_sha256", fp)),
        folded=int(features.get("conv_bn_folded", 0)),
    )


def video_branch(features: dict, paths: dict) -> VideoBranch:
    fp = paths["video_features"]
    return VideoBranch(
        settings=_settings(ExtractVideoSettings, features, fp),
        short_side=int(_need(features, "short_side", fp)), crop_size=int(_need(features, "crop_size", fp)),
        mean=tuple(map(float, _need(features, "mean", fp))), std=tuple(map(float, _need(features, "std", fp))),
        channel_order=str(features.get("channel_order", "RGB")), weights=str(_need(features, "weights", fp)),
        sha256=str(_need(features, "weights_sha256", fp)), folded=int(features.get("conv_bn_folded", 0)),
    )


def _check_trained_on(saved: dict, store_attrs: dict, model_path: str, store_path: str) -> None:
    """A head file records the attributes of the store it was trained on: its weights must be the store's."""
    trained_on = saved.get("features_attrs") or {}
    if trained_on and trained_on.get("weights_sha256") != str(store_attrs.get("weights_sha256")):
        raise PipelineError(f"{model_path} was trained on features of other backbone weights than {store_path} "
                            "records: the run is out of step, rerun dvc repro")


def load_run(root: str | Path = ".", rev: str | None = None) -> TrainedRun:
    """The run of the workspace at ``root`` (``rev`` None) or of revision ``rev`` (see the module docstring)."""
    files = RunFiles(root, rev)
    try:
        paths = read_paths(files)
        locked = read_locked_params(files)
        heads, saved = {}, {}
        for head in HEADS:
            heads[head], saved[head] = _load_head(files, paths[f"{head}_mlp"])
        classes = [saved["fusion"]["classes"][i] for i in range(len(saved["fusion"]["classes"]))]
        for head in HEADS:
            names = [saved[head]["classes"][i] for i in range(len(saved[head]["classes"]))]
            if names != classes or heads[head].config["num_classes"] != len(classes):
                raise PipelineError(f"{paths[f'{head}_mlp']} predicts other classes than {paths['fusion_mlp']}: "
                                    "the heads are out of step, rerun dvc repro")
        images = read_store_attrs(files, paths["images"])
        audio_attrs = read_store_attrs(files, paths["audio_features"])
        video_attrs = read_store_attrs(files, paths["video_features"])
        _check_trained_on(saved["audio"], audio_attrs, paths["audio_mlp"], paths["audio_features"])
        _check_trained_on(saved["video"], video_attrs, paths["video_mlp"], paths["video_features"])
        segments = str(saved["video"].get("segments", "mean"))
        if str(saved["fusion"].get("segments", segments)) != segments:
            raise PipelineError(f"{paths['fusion_mlp']} and {paths['video_mlp']} take the video features in "
                                "different ways (video_mlp.segments): rerun dvc repro")
        threads = next((int(locked[s]["train"]["threads"]) for s in OPTIONAL_STAGES
                        if "threads" in (locked.get(s, {}).get("train") or {})), 1)
        # the weights files of stages weights_audio/weights_video (runs before them have none: the backbones are
        # then rebuilt from the recorded settings)
        weights_files = {m: paths[f"{m}_weights"] for m in ("audio", "video")
                         if f"{m}_weights" in paths and files.exists(paths[f"{m}_weights"])}
        return TrainedRun("workspace" if rev is None else rev, heads, saved, classes, segments,
                          audio_branch(images, audio_attrs, locked, paths), video_branch(video_attrs, paths),
                          threads, files, weights_files)
    except BaseException:
        files.close()
        raise
