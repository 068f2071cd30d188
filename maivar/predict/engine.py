"""New videos through a trained run: the stages' own per-clip code, with the run's recorded settings.

For each video, as the pipeline does for a clip of its dataset:

1. **sound** (worker processes, :func:`prepare_sound`): prepare's checks and ffmpeg demux
   (:func:`maivar.data.subset.examine_video`: the file opens, is not truncated, has an audio stream that
   demuxes, covers ``min_audio_coverage`` of the picture and is not silent), then render's audio image
   (:func:`maivar.audio.render.render_clip`);
2. **picture**: extract_video's decoding and TSN (:func:`maivar.video.features.extract_video_features`);
3. **audio features**: extract_audio's preprocessing and backbone
   (:func:`maivar.audio.features.extract_audio_features`, the unflipped image as evaluate scores it);
4. **heads**: the audio, video and fusion MLPs, with the thread count evaluate used.

Both backbones are built by the stages' own builders (:func:`maivar.audio.backbone.build_audio_backbone`,
:func:`maivar.video.tsn.build_video_backbone`) from the settings the run's stores record.

A video whose sound the pipeline would not have kept (no audio stream, silent, too short, not demuxable,
unreadable WAV) gets the video branch only, with the reason; a video that cannot be used at all (missing,
unreadable, truncated, undecodable, hung) gets its one-line reason and the others go on. Videos are processed
in chunks (all of a chunk's sound in parallel, then its pictures batched through the TSN), so that memory stays
bounded by the chunk, not by the number of videos.

On the CPU, with the batch sizes the stages used, a test clip's video gives bit for bit the features the
stores hold, hence its row of ``metrics/predictions.csv`` (tested).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from maivar.audio.backbone import AudioBackbone, build_audio_backbone
from maivar.audio.features import extract_audio_features
from maivar.audio.render import clip_keywords, render_clip
from maivar.audio.render import warm_up as warm_up_render
from maivar.core import rejections as R
from maivar.core.errors import PipelineError
from maivar.core.parallel import default_workers, guarded_imap
from maivar.core.rejections import ClipFailure
from maivar.data.subset import ExamineTask, examine_video
from maivar.evaluation import HEADS, ranked
from maivar.extraction.inference import select_device
from maivar.heads.join import video_input
from maivar.heads.training import predict as head_logits
from maivar.settings.base import read_params
from maivar.settings.runtime import RuntimeSettings
from maivar.video.features import VideoClip, extract_video_features
from maivar.video.tsn import Preprocessing, VideoBackbone, build_video_backbone

from .run import AudioBranch, TrainedRun

log = logging.getLogger(__name__)

# What examine_video reports when the picture is fine but the sound is not one the pipeline would keep.
SOUND_REASONS = (R.NO_AUDIO_STREAM, R.SILENT_AUDIO, R.AUDIO_TOO_SHORT, R.DEMUX_FAILED)
# Batch sizes on a GPU when the runtime settings give less (they are tuned for a 2-core CPU).
GPU_BATCH_IMAGES, GPU_BATCH_VIDEOS = 256, 16


@dataclass(frozen=True)
class Sound:
    """A video's sound, as a worker hands it back: the declared frame count (the manifest's ``frames``) and the
    audio image, or why the audio branch is skipped."""

    frames: int | None
    image: np.ndarray | None
    skipped: str | None = None


@dataclass
class Prediction:
    """One video's outcome: each branch's logits, the branches skipped (with why), or the video's error."""

    path: str
    logits: dict[str, np.ndarray] = field(default_factory=dict)  # branch -> C logits (float32)
    skipped: dict[str, str] = field(default_factory=dict)  # branch -> why
    error: str | None = None

    def top(self, k: int, classes: Sequence[str]) -> dict[str, list[tuple[str, float]]]:
        """Each predicted branch's ``k`` best classes with their probabilities, best first (ties: lower label)."""
        out = {}
        for branch in HEADS:
            if branch in self.logits:
                labels, probs = ranked(self.logits[branch][None, :], k)
                out[branch] = [(classes[int(c)], float(p)) for c, p in zip(labels[0], probs[0], strict=True)]
        return out


def prepare_sound(item: tuple[int, str], *, branch: AudioBranch, render: dict, wav_dir: str) -> Sound:
    """Worker: prepare's checks and demux of one video, then its audio image; raises :class:`ClipFailure` for a
    video that cannot be used at all (as prepare would reject it)."""
    index, path = item
    wav = Path(wav_dir) / f"{index}.wav"
    p = branch.prepare
    task = ExamineTask(id=str(index), video_path=path, wav_path=str(wav), sample_rate=p.sample_rate,
                       channels=p.channels, min_decoded_share=p.min_decoded_share, silence_dbfs=p.silence_dbfs,
                       timeout_s=0.9 * p.timeout_s, frame_check=p.frame_check, min_audio_coverage=p.min_audio_coverage,
                       max_duration_s=p.max_duration_s, max_pixels=p.max_pixels)
    try:
        try:
            info = examine_video(task)
        except ClipFailure as failure:
            if failure.reason in SOUND_REASONS:
                return Sound(None, None, str(failure))
            raise
        try:
            image = render_clip(str(wav), **render).image
        except ClipFailure as failure:
            return Sound(info["frames"], None, str(failure))
        return Sound(info["frames"], image)
    finally:
        wav.unlink(missing_ok=True)


def predictor_settings(params_path: str | Path, device: str | None = None) -> dict:
    """:class:`Predictor`'s machine settings (``device``, ``workers``, ``batch_size``, ``batch_videos``):
    ``params_path``'s ``runtime`` section when there is one (else the defaults: ``auto`` device, all cores, the CPU
    batch sizes), ``device`` (``--device``) on top."""
    settings = {"device": "auto", "workers": 0, "batch_size": 8, "batch_videos": 1}
    if Path(params_path).is_file():
        params = read_params(params_path)
        if "runtime" in params:  # else the defaults
            runtime = RuntimeSettings.from_params(params)
            settings.update(device=runtime.device, workers=runtime.workers,
                            batch_size=runtime.extract_audio.batch_size,
                            batch_videos=runtime.extract_video.batch_videos)
    if device:
        settings["device"] = device
    return settings


@contextlib.contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Predictor:
    """The run's two frozen backbones (built once, checked against the recorded weights) and its three heads.

    ``device`` as ``runtime.device``; ``workers`` for the per-video work (0 or None: all cores);
    ``batch_images`` / ``batch_videos`` as ``runtime.extract_audio.batch_size`` /
    ``runtime.extract_video.batch_videos`` (on a GPU at least :data:`GPU_BATCH_IMAGES` / :data:`GPU_BATCH_VIDEOS`).
    """

    def __init__(self, run: TrainedRun, *, device: str = "auto", workers: int | None = None, batch_images: int = 8,
                 batch_videos: int = 1):
        self.run = run
        self.device = select_device(device)
        on_gpu = self.device.type == "cuda"
        self.batch_images = max(int(batch_images), GPU_BATCH_IMAGES if on_gpu else 1)
        self.batch_videos = max(int(batch_videos), GPU_BATCH_VIDEOS if on_gpu else 1)
        self.workers = int(workers) if workers else default_workers()
        self.chunk = max(8, 2 * self.workers, 2 * self.batch_videos)
        self.render = clip_keywords(run.audio.representation, run.audio.render)
        self._check_librosa()
        self.audio = self._audio_backbone()
        self.video = self._video_backbone()
        warm_up_render(self.render)  # librosa's first call compiles (numba): once here, not in every worker

    # ------------------------------------------------------------------------------------------- backbones
    def _checkpoint(self, path: str | None) -> str | None:
        if not path:
            return None
        files = self.run.files
        if files.exists(path):  # under the workspace's root, or tracked by git or DVC at the revision
            return str(files.local(path))
        return path

    def _check_weights(self, what: str, sha256: str, recorded: str, source: str) -> None:
        if sha256 != recorded:
            raise PipelineError(
                f"the {what} backbone rebuilt from {source} is not the one that made the run's features (weights "
                f"sha256 {sha256[:12]}, the store records {recorded[:12]}): is the checkpoint file the same?")

    def _check_resolved(self, what: str, here, recorded) -> None:
        if here != recorded:
            raise PipelineError(f"the {what} rebuilt here is {here}, the run's store records {recorded}: is the code "
                                "or the config the run's? (rerun dvc repro)")

    def _check_folded(self, what: str, folded: int, recorded: int) -> None:
        if folded != recorded:
            log.warning("%s backbone: %d BatchNorm layers folded here, %d when the run extracted its features", what,
                        folded, recorded)

    def _weights_file(self, modality: str) -> str | None:
        """The run's own weights file (stage weights_<modality>'s output, pulled with the run): the backbone then
        needs neither the checkpoint nor timm's cache. Its sha256 is checked against the store's all the same."""
        path = self.run.weights_files.get(modality)
        return str(self.run.files.local(path)) if path else None

    def _audio_backbone(self) -> AudioBackbone:
        r = self.run.audio
        weights_file = self._weights_file("audio")
        settings = r.settings if weights_file else dataclasses.replace(
            r.settings, checkpoint=self._checkpoint(r.settings.checkpoint))
        backbone = build_audio_backbone(settings, self.device, weights_file=weights_file, check_request=False)
        self._check_weights("audio", backbone.weights.sha256, r.sha256, r.weights)
        self._check_resolved("audio backbone's mean/std", (backbone.mean, backbone.std), (r.mean, r.std))
        self._check_folded("audio", backbone.folded, r.folded)
        return backbone

    def _video_backbone(self) -> VideoBackbone:
        r = self.run.video
        config = str(self.run.files.local(r.settings.config, folder=True))
        weights_file = self._weights_file("video")
        checkpoint = r.settings.checkpoint if weights_file else self._checkpoint(r.settings.checkpoint)
        settings = dataclasses.replace(r.settings, config=config, checkpoint=checkpoint)
        backbone = build_video_backbone(settings, self.device, weights_file=weights_file, check_request=False)
        self._check_weights("video", backbone.weights.sha256, r.sha256, r.weights)
        self._check_resolved("video preprocessing", backbone.pre,
                             Preprocessing(r.short_side, r.crop_size, r.mean, r.std, r.channel_order))
        self._check_folded("video", backbone.folded, r.folded)
        return backbone

    def _check_librosa(self) -> None:
        import librosa

        made_with = self.run.audio.librosa_version
        if made_with and made_with != librosa.__version__:
            log.warning("the run's audio images were drawn with librosa %s, this is %s: they may differ slightly",
                        made_with, librosa.__version__)

    # ----------------------------------------------------------------------------------------- prediction
    def predict(self, paths: Sequence[str], *, progress: bool = False) -> Iterator[Prediction]:
        """Yield a :class:`Prediction` per path, in order (a chunk at a time)."""
        with tqdm(total=len(paths), desc="predict", unit="video", disable=not progress, mininterval=1.0) as bar:
            for start in range(0, len(paths), self.chunk):
                chunk = list(paths[start : start + self.chunk])
                yield from self._predict_chunk(chunk)
                bar.update(len(chunk))

    def _predict_chunk(self, paths: list[str]) -> list[Prediction]:
        results = [Prediction(p) for p in paths]
        run = self.run
        with tempfile.TemporaryDirectory(prefix="maivar-predict-") as wav_dir:
            worker = functools.partial(prepare_sound, branch=run.audio, render=self.render, wav_dir=wav_dir)
            sounds = list(guarded_imap(worker, list(enumerate(paths)), workers=self.workers,
                                       timeout_s=run.audio.prepare.timeout_s + run.audio.render.timeout_s))
        clips, images, with_sound = [], [], []
        for i, sound in enumerate(sounds):
            if isinstance(sound, ClipFailure):
                results[i].error = str(sound)
                continue
            clips.append(VideoClip(paths[i], paths[i], sound.frames))
            if sound.image is None:
                results[i].skipped = {"audio": sound.skipped, "fusion": sound.skipped}
            else:
                images.append(sound.image)
                with_sound.append(i)
        ok = [i for i, s in enumerate(sounds) if not isinstance(s, ClipFailure)]
        v = run.video.settings
        rows, video_feats, rejected = extract_video_features(
            self.video.model, clips, num_segments=v.num_segments, pre=self.video.pre, batch_videos=self.batch_videos,
            workers=self.workers, device=self.device, timeout_s=v.timeout_s, min_decoded_share=v.min_decoded_share,
            precision=v.precision, progress=False)
        by_path = {r.id: r for r in rejected}
        for i in ok:
            if paths[i] in by_path:
                results[i].error = f"{by_path[paths[i]].reason}: {by_path[paths[i]].detail}"
        a = self.audio
        audio_feats = extract_audio_features(a.model, images, input_size=run.audio.settings.input_size, mean=a.mean,
                                             std=a.std, batch_size=self.batch_images, workers=0, device=self.device,
                                             precision=run.audio.settings.precision, progress=False)
        video_x = video_input(video_feats, run.segments)
        video_row = {ok[r]: k for k, r in enumerate(rows)}
        audio_row = {i: k for k, i in enumerate(with_sound)}
        fused = [i for i in with_sound if i in video_row]
        with _threads(run.threads):
            logits = {
                "video": head_logits(run.heads["video"], video_x),
                "audio": head_logits(run.heads["audio"], audio_feats),
                "fusion": head_logits(run.heads["fusion"], np.concatenate(
                    [audio_feats[[audio_row[i] for i in fused]], video_x[[video_row[i] for i in fused]]], axis=1)
                    if fused else np.zeros((0, run.heads["fusion"].config["in_features"]), np.float32)),
            }
        fused_row = {i: k for k, i in enumerate(fused)}
        for i, result in enumerate(results):
            if result.error is not None:
                result.skipped = {}
                continue
            result.logits["video"] = logits["video"][video_row[i]]
            if i in audio_row:
                result.logits["audio"] = logits["audio"][audio_row[i]]
                result.logits["fusion"] = logits["fusion"][fused_row[i]]
        return results
