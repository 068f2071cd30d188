"""The embedded default dataset: a small synthetic UCF101 look-alike, generated deterministically.

Layout and formats are UCF101's: ``UCF-101/<Class>/v_<Class>_gGG_cCC.avi`` (MPEG-4 part 2 video in AVI,
yuv420p, 16-bit PCM stereo audio) and ``ucfTrainTestlist/`` with ``classInd.txt`` (``<index> <Class>``),
``trainlistNN.txt`` (``<Class>/<file>.avi <index>``) and ``testlistNN.txt`` (``<Class>/<file>.avi``, UCF101's
own format: path alone). Split k tests on groups 7(k-1)+1 .. 7k, as UCF101 does; lists are written for each
split whose train and test sets are both non-empty.

What makes a class (all cues global and low-frequency, so that even randomly initialized CNNs see them):

- **look**: background color, a stripe texture (orientation and spatial frequency) drifting in a
  class-specific direction, and a large colored disc moving on a class-specific path;
- **sound**: a tone with a class-specific pitch class (distinct in a chromagram, not only in octave) and
  harmonic, gated by a class-specific rhythm (pulse rate and duty cycle).

Confusable pairs, so that fusion has something to gain: among the classes with audio, classes 4k and 4k+1
*look* alike (same colors and texture, only the disc's path differs) but sound different, and classes 4k+2
and 4k+3 *sound* alike (same pitch, only the rhythm differs) but look different.

Noise (``noise`` in 0..1): per-pixel picture noise, per-clip color/pitch/tempo jitter, background hum, and
"cue swaps": with probability ``noise / 4`` a clip's picture, and independently its sound, is drawn from
another random class. So neither modality alone is perfect, and the other modality can correct it.

The last ``classes_without_audio`` classes have no audio stream at all (like UCF50's classes in UCF101);
``silent_clips`` clips of classes with audio carry a digital-silence track. Everything derives from
``seed``; encoding is single-threaded with bitexact flags, so the same parameters give the same bytes.
"""

from __future__ import annotations

import colorsys
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from maivar.core.atomic import atomic_path
from maivar.core.errors import PipelineError
from maivar.core.parallel import guarded_map
from maivar.core.rejections import ClipFailure
from maivar.data.ucf101 import CLASS_INDEX, LISTS_DIR, SPLIT_NUMBERS, VIDEOS_DIR, list_name

if TYPE_CHECKING:
    from maivar.settings.synthesize import SynthesizeSettings

log = logging.getLogger(__name__)

TEST_GROUPS_PER_SPLIT = 7  # UCF101: split k tests on groups 7(k-1)+1 .. 7k
PATHS = ("ring", "horizontal", "vertical", "diagonal", "figure8", "still")
PITCH_CLASSES = ("C", "Cs", "D", "Ds", "E", "F", "Fs", "G", "Gs", "A", "As", "B")
# Pitch classes chosen to be far apart on the chroma circle first (C, Fs, D, Gs, E, As, ...).
PITCH_ORDER = (0, 6, 3, 9, 1, 7, 4, 10, 2, 8, 5, 11)
VIDEO_BIT_RATE = 1_000_000  # about UCF101's (MPEG-4 part 2, 320x240)
NOISE_BANK = 8  # noise frames generated per clip and cycled through


@dataclass(frozen=True)
class Look:
    hue: float  # disc hue 0..1
    bg_hue: float  # background hue
    stripe_angle: float  # radians
    stripe_period: float  # pixels
    drift: float  # stripe drift, pixels per frame (signed)
    path: str  # the disc's path, one of PATHS


@dataclass(frozen=True)
class Sound:
    pitch_class: int  # 0..11
    octave: int  # 3..5
    pulse_hz: float  # rhythm: pulses per second
    duty: float  # share of each pulse period that sounds


@dataclass(frozen=True)
class ClassSpec:
    name: str
    look: Look
    sound: Sound | None  # None: no audio stream


@dataclass(frozen=True)
class ClipTask:
    path: str  # where to write the AVI
    seed: int
    look: Look
    sound: Sound | None
    silent: bool
    duration_s: float
    width: int
    height: int
    fps: int
    sample_rate: int
    noise: float


def _looks(n: int) -> list[Look]:
    """``n`` visually distinct looks: hues spread around the circle, textures and paths varied."""
    looks = []
    for i in range(n):
        hue = (i * 0.618034) % 1.0  # golden-ratio spacing keeps neighbors apart for any n
        looks.append(Look(
            hue=hue,
            bg_hue=(hue + 0.5) % 1.0,
            stripe_angle=(i * 3 % 8) * np.pi / 8,
            stripe_period=(16.0, 28.0, 48.0, 80.0)[i % 4],
            drift=(1.5 + (i % 3)) * (1 if i % 2 == 0 else -1),
            path=PATHS[i % len(PATHS)],
        ))
    return looks


def _sounds(n: int) -> list[Sound]:
    return [Sound(pitch_class=PITCH_ORDER[i % 12], octave=3 + (i // 12) % 3 + (i % 2),
                  pulse_hz=(1.0, 2.0, 4.0, 6.0, 3.0)[i % 5], duty=(0.5, 0.3, 0.7)[i % 3]) for i in range(n)]


def class_specs(n_classes: int, n_without_audio: int) -> list[ClassSpec]:
    """The classes, with their look and sound (see the module docstring for the confusable pairs)."""
    n_audio = n_classes - n_without_audio
    looks, sounds = _looks(n_classes), _sounds(n_classes)
    next_look = next_sound = 0
    specs: list[ClassSpec] = []
    prev: ClassSpec | None = None
    for c in range(n_classes):
        pos = c % 4
        if c < n_audio and pos == 1 and prev is not None:  # looks like the previous class, sounds different
            look = replace(prev.look, path=PATHS[(PATHS.index(prev.look.path) + 1) % len(PATHS)])
            sound, next_sound = sounds[next_sound], next_sound + 1
        elif c < n_audio and pos == 3 and prev is not None:  # sounds like the previous class, looks different
            look, next_look = looks[next_look], next_look + 1
            sound = replace(prev.sound, pulse_hz=prev.sound.pulse_hz * 1.5 + 0.5)
        else:
            look, next_look = looks[next_look], next_look + 1
            sound, next_sound = sounds[next_sound], next_sound + 1
        if c >= n_audio:
            sound = None
        name = f"Synth{c + 1:02d}{look.path.capitalize()}{PITCH_CLASSES[sound.pitch_class] if sound else 'Mute'}"
        spec = ClassSpec(name=name, look=look, sound=sound)
        specs.append(spec)
        prev = spec
    return specs


def _yuv(h: float, s: float, v: float) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    w = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return y, u, w


def _disc_center(path: str, t: float, phase: float, w: int, h: int) -> tuple[float, float]:
    """Disc center at time ``t`` (in periods) on a class-specific path."""
    a = 2 * np.pi * (t + phase)
    cx, cy, ax, ay = w / 2, h / 2, w * 0.3, h * 0.28
    if path == "ring":
        return cx + ax * np.cos(a), cy + ay * np.sin(a)
    if path == "horizontal":
        return cx + ax * np.sin(a), cy
    if path == "vertical":
        return cx, cy + ay * np.sin(a)
    if path == "diagonal":
        return cx + ax * np.sin(a), cy + ay * np.sin(a)
    if path == "figure8":
        return cx + ax * np.sin(a), cy + ay * np.sin(2 * a)
    return cx + ax * 0.2 * np.sin(7 * a), cy  # "still": trembles in place


def render_video(task: ClipTask, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The clip's frames as (Y, U, V) uint8 planes (yuv420p)."""
    look, w, h, noise = task.look, task.width, task.height, task.noise
    n_frames = int(round(task.duration_s * task.fps))
    jitter = noise * 0.04
    hue = look.hue + rng.normal(0, jitter)
    bg_y, bg_u, bg_v = _yuv(look.bg_hue + rng.normal(0, jitter), 0.6, 0.35 + rng.uniform(0, 0.2 * noise))
    fg_y, fg_u, fg_v = _yuv(hue, 0.9, 0.95)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Stripes: a wider canvas that is shifted along x each frame (cheap drift).
    period = look.stripe_period * (1 + rng.normal(0, 0.1 * noise))
    margin = int(abs(look.drift) * n_frames) + 1
    cx_, cy_ = np.cos(look.stripe_angle), np.sin(look.stripe_angle)
    xw = np.arange(w + margin, dtype=np.float32)[None, :]
    stripes = (28 * np.sign(np.sin(2 * np.pi * (xw * cx_ + yy[:, :1] * cy_) / period))).astype(np.float32)
    bank = rng.normal(0, 40 * noise, size=(NOISE_BANK, h, w)).astype(np.float32)
    radius = min(w, h) * (0.22 + rng.uniform(-0.03, 0.03))
    speed = 1.0 / (2.0 + rng.uniform(-0.3, 0.3))  # periods per second
    phase = rng.uniform(0, 1)
    r2 = radius ** 2
    frames = []
    for f in range(n_frames):
        t = f / task.fps * speed
        off = int(round(f * look.drift)) % margin
        y = bg_y + stripes[:, off:off + w]
        px, py = _disc_center(look.path, t, phase, w, h)
        x0, x1 = max(0, int(px - radius) - 1), min(w, int(px + radius) + 2)
        y0, y1 = max(0, int(py - radius) - 1), min(h, int(py + radius) + 2)
        box = y[y0:y1, x0:x1]  # only the disc's bounding box needs the distance test
        box[(xx[y0:y1, x0:x1] - px) ** 2 + (yy[y0:y1, x0:x1] - py) ** 2 < r2] = fg_y
        y += bank[rng.integers(NOISE_BANK)]
        u, v = np.full((h // 2, w // 2), bg_u), np.full((h // 2, w // 2), bg_v)
        c0, c1, d0, d1 = x0 // 2, (x1 + 1) // 2, y0 // 2, (y1 + 1) // 2
        sub_x, sub_y = xx[2 * d0:2 * d1:2, 2 * c0:2 * c1:2], yy[2 * d0:2 * d1:2, 2 * c0:2 * c1:2]
        disc_c = (sub_x - px) ** 2 + (sub_y - py) ** 2 < r2
        u[d0:d1, c0:c1][disc_c] = fg_u
        v[d0:d1, c0:c1][disc_c] = fg_v
        frames.append(tuple(np.clip(p, 0, 255).astype(np.uint8) for p in (y, u, v)))
    return frames


def render_audio(task: ClipTask, rng: np.random.Generator) -> np.ndarray:
    """The clip's sound as int16, shape (samples, 2)."""
    sr = task.sample_rate
    n = int(round(task.duration_s * sr))
    if task.silent:
        return np.zeros((n, 2), dtype=np.int16)
    s, noise = task.sound, task.noise
    t = np.arange(n, dtype=np.float64) / sr
    midi = 12 * (s.octave + 1) + s.pitch_class + rng.normal(0, 0.3 * noise)
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    tone = np.sin(2 * np.pi * f0 * t) + 0.4 * np.sin(2 * np.pi * 2 * f0 * t + rng.uniform(0, 2 * np.pi))
    pulse_hz = s.pulse_hz * (1 + rng.normal(0, 0.08 * noise))
    gate_phase = (t * pulse_hz + rng.uniform(0, 1)) % 1.0
    gate = (gate_phase < s.duty).astype(np.float64)
    gate = np.convolve(gate, np.hanning(int(sr * 0.01)) / (sr * 0.005), mode="same")  # soft edges, no clicks
    hum = np.sin(2 * np.pi * rng.uniform(80, 200) * t) * rng.uniform(0, 0.5 * noise)
    wave = 0.45 * gate * tone + hum * 0.4 + rng.normal(0, 0.25 * noise, size=n)
    wave *= rng.uniform(0.4, 1.0)  # recording level
    left = wave
    right = wave * rng.uniform(0.7, 1.0)
    stereo = np.stack([left, right], axis=1) / 1.6
    return (np.clip(stereo, -1, 1) * 32767).astype(np.int16)


def encode_clip(path: str | Path, frames, audio: np.ndarray | None, fps: int, sample_rate: int) -> None:
    """Write an MPEG-4/AVI (with PCM audio when given), single-threaded and bitexact."""
    h, w = frames[0][0].shape
    with av.open(str(path), "w", format="avi", container_options={"fflags": "+bitexact"}) as out:
        vs = out.add_stream("mpeg4", rate=fps, options={"flags": "+bitexact"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.bit_rate = VIDEO_BIT_RATE
        vs.codec_context.thread_count = 1
        aus = None
        if audio is not None:
            aus = out.add_stream("pcm_s16le", rate=sample_rate, layout="stereo", options={"flags": "+bitexact"})
        chunk = sample_rate // fps
        for i, (y, u, v) in enumerate(frames):
            vf = av.VideoFrame(w, h, "yuv420p")
            for plane, data in zip(vf.planes, (y, u, v), strict=True):
                _copy_plane(plane, data)
            vf.pts = i
            for pkt in vs.encode(vf):
                out.mux(pkt)
            if aus is not None:
                part = audio[i * chunk:(i + 1) * chunk if i < len(frames) - 1 else len(audio)]
                if len(part):
                    af = av.AudioFrame.from_ndarray(np.ascontiguousarray(part).reshape(1, -1), format="s16",
                                                    layout="stereo")
                    af.sample_rate, af.pts = sample_rate, i * chunk
                    for pkt in aus.encode(af):
                        out.mux(pkt)
        for stream in (vs, aus):
            if stream is not None:
                for pkt in stream.encode(None):
                    out.mux(pkt)


def _copy_plane(plane, data: np.ndarray) -> None:
    stride = plane.line_size
    h, w = data.shape
    if stride == w:
        plane.update(data.tobytes())
    else:
        buf = np.zeros((h, stride), dtype=np.uint8)
        buf[:, :w] = data
        plane.update(buf.tobytes())


def make_clip(task: ClipTask) -> str:
    """Render and encode one clip (a :func:`guarded_map` worker); returns its path."""
    rng = np.random.default_rng(task.seed)
    frames = render_video(task, rng)
    audio = render_audio(task, rng) if task.sound is not None else None
    encode_clip(task.path, frames, audio, task.fps, task.sample_rate)
    return task.path


def test_groups(split: int) -> range:
    """Groups held out for testing in UCF101's split ``split`` (1-based)."""
    return range(TEST_GROUPS_PER_SPLIT * (split - 1) + 1, TEST_GROUPS_PER_SPLIT * split + 1)


def clip_id(class_name: str, group: int, clip: int) -> str:
    return f"v_{class_name}_g{group:02d}_c{clip:02d}"


def split_lists(specs: list[ClassSpec], groups: int, clips_per_group: int) -> dict[str, str]:
    """``classInd.txt`` and the train/test lists of every split with non-empty train and test sets."""
    files = {CLASS_INDEX: "".join(f"{i} {s.name}\r\n" for i, s in enumerate(specs, 1))}
    for k in SPLIT_NUMBERS:
        held = set(test_groups(k))
        if not held & set(range(1, groups + 1)) or set(range(1, groups + 1)) <= held:
            continue
        train, test = [], []
        for i, s in enumerate(specs, 1):
            for g in range(1, groups + 1):
                for c in range(1, clips_per_group + 1):
                    rel = f"{s.name}/{clip_id(s.name, g, c)}.avi"
                    if g in held:
                        test.append(f"{rel}\r\n")  # UCF101's test lists: the path alone
                    else:
                        train.append(f"{rel} {i}\r\n")
        files[list_name("train", k)] = "".join(train)
        files[list_name("test", k)] = "".join(test)
    return files


def synthesize(out_dir: str | Path, *, settings: SynthesizeSettings, workers: int | None = None,
               timeout_s: float = 300.0) -> dict:
    """Write the dataset ``settings`` describes to ``out_dir`` (atomically, as a whole) and return a summary."""
    specs = class_specs(settings.classes, settings.classes_without_audio)
    rng = np.random.default_rng(settings.seed)
    ids = [(spec, g, c) for spec in specs for g in range(1, settings.groups + 1)
           for c in range(1, settings.clips_per_group + 1)]
    with_audio = [i for i, (spec, _, _) in enumerate(ids) if spec.sound is not None]
    if settings.silent_clips > len(with_audio):
        raise PipelineError(f"synthesize.silent_clips is {settings.silent_clips} but only {len(with_audio)} clips "
                            "have audio")
    silent = (set(rng.choice(with_audio, size=settings.silent_clips, replace=False).tolist())
              if settings.silent_clips else set())
    clip_seeds = rng.integers(0, 2**31, size=len(ids))
    swap_p = settings.noise / 4
    out_dir = Path(out_dir)
    with atomic_path(out_dir, directory=True) as tmp:
        tasks = []
        for i, (spec, g, c) in enumerate(ids):
            crng = np.random.default_rng(clip_seeds[i])
            look = specs[crng.integers(len(specs))].look if crng.random() < swap_p else spec.look
            sound = spec.sound
            if sound is not None and crng.random() < swap_p:
                voiced = [o.sound for o in specs if o.sound is not None]
                sound = voiced[int(crng.integers(len(voiced)))]
            (tmp / VIDEOS_DIR / spec.name).mkdir(parents=True, exist_ok=True)
            tasks.append(ClipTask(
                path=str(tmp / VIDEOS_DIR / spec.name / f"{clip_id(spec.name, g, c)}.avi"), seed=int(clip_seeds[i]),
                look=look, sound=sound, silent=i in silent, duration_s=settings.duration_s, width=settings.width,
                height=settings.height, fps=settings.fps, sample_rate=settings.sample_rate, noise=settings.noise))
        results = guarded_map(make_clip, tasks, workers=workers, timeout_s=timeout_s, desc="synthesize")
        failed = [(t.path, r) for t, r in zip(tasks, results, strict=True) if isinstance(r, ClipFailure)]
        if failed:
            path, r = failed[0]
            raise PipelineError(f"synthesizing {len(failed)} clip(s) failed, first {Path(path).name}: "
                                f"{r.reason} ({r.detail})")
        lists = tmp / LISTS_DIR
        lists.mkdir()
        for name, text in split_lists(specs, settings.groups, settings.clips_per_group).items():
            (lists / name).write_bytes(text.encode())
    summary = {
        "classes": [spec.name for spec in specs],
        "classes_without_audio": [spec.name for spec in specs if spec.sound is None],
        "clips": len(ids),
        "silent_clips": sorted(clip_id(ids[i][0].name, ids[i][1], ids[i][2]) for i in silent),
    }
    log.info("synthesized %d clips of %d classes (%d without audio, %d silent) in %s", len(ids), len(specs),
             settings.classes_without_audio, settings.silent_clips, out_dir)
    return summary
