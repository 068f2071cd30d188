"""Small example datasets in each format (``csv``, ``kinetics``, ``ucf101`` with MP4/MKV/WebM), made from the
tiny synthetic dataset (``conftest.tiny_dataset``: 4 classes x 9 clips of 1 s, 96x72 at 10 fps, 16 kHz; one
class without audio, one silent clip) by transcoding with the imageio-ffmpeg binary. Deterministic."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from maivar.data.ucf101 import read_split

from faults import BITEXACT, ffmpeg, truncate

CODECS = {  # container -> (video codec options, audio codec options)
    ".mp4": (["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"], ["-c:a", "aac", "-b:a", "64k"]),
    ".mkv": (["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"], ["-c:a", "flac"]),
    ".webm": (["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k"],
              ["-c:a", "libopus", "-b:a", "48k"]),
}


def transcode(src: Path, dst: Path, *extra: str) -> Path:
    """``src`` re-encoded into ``dst``'s container (its video and, where it has one, its audio)."""
    video, audio = CODECS[dst.suffix]
    dst.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg("-i", src, *video, *audio, *extra, *BITEXACT, dst)
    return dst


def tiny_clips(root: Path) -> list:
    """The tiny dataset's split-1 entries (``ListedVideo``: id, class_name, split, rel_path), train then test."""
    return read_split(root / "ucfTrainTestlist", 1).videos


def make_ucf101_mixed(root: Path, out: Path) -> dict:
    """UCF101's layout whose lists name ``.mp4``, ``.mkv`` and ``.webm`` files (round robin), plus two broken
    files listed with them: a cut MP4 and random bytes. Returns {"broken": {id: reason}, "containers": {id: ext}}."""
    shutil.copytree(root / "ucfTrainTestlist", out / "ucfTrainTestlist")
    exts = list(CODECS)
    containers = {}
    for k, v in enumerate(tiny_clips(root)):
        ext = exts[k % len(exts)]
        transcode(root / "UCF-101" / v.rel_path, out / "UCF-101" / Path(v.rel_path).with_suffix(ext))
        containers[v.id] = ext
    for name in ("trainlist01.txt", "testlist01.txt"):
        path = out / "ucfTrainTestlist" / name
        lines = []
        for line in path.read_text().splitlines():
            rel, *rest = line.split()
            stem = Path(rel).stem
            lines.append(" ".join([str(Path(rel).with_suffix(containers[stem])), *rest]))
        path.write_text("\n".join(lines) + "\n")
    # two broken files of a class with audio, in the test split: a cut MP4 (moov at the end: no index) and noise
    first = next(v for v in tiny_clips(root) if v.split == "test" and "Ring" in v.class_name)
    cls = first.class_name
    good = transcode(root / "UCF-101" / first.rel_path, out / "tmp" / "good.mp4")
    truncate(good, out / "UCF-101" / cls / f"v_{cls}_g90_c01.mp4", 0.5)
    (out / "UCF-101" / cls / f"v_{cls}_g91_c01.webm").write_bytes(bytes(range(256)) * 64)
    shutil.rmtree(out / "tmp")
    with open(out / "ucfTrainTestlist" / "testlist01.txt", "a") as fh:
        fh.write(f"{cls}/v_{cls}_g90_c01.mp4\n{cls}/v_{cls}_g91_c01.webm\n")
    broken = {f"v_{cls}_g90_c01": "unreadable_video", f"v_{cls}_g91_c01": "unreadable_video"}
    return {"broken": broken, "containers": containers}


LABELS = {  # tiny class -> a label with spaces, as users write them
    "Synth01RingC": "ringing bell", "Synth02HorizontalFs": "sliding door", "Synth03HorizontalDs": "tap dancing",
    "Synth04VerticalMute": "silent walk",
}


def make_csv(root: Path, out: Path) -> dict:
    """MP4 files (H.264/AAC) in a layout of their own (``clips/<label_folder>/<n>.mp4``) and
    ``annotations.csv`` (``path,label,split,start_s,end_s``), with:

    - one 2-s video (two clips of a class, back to back) listed as two 1-s windows;
    - one clip whose sound stops after 0.3 s of its 1 s (audio_too_short at min_audio_coverage 0.5);
    - one listed file that does not exist (missing_file).
    """
    rows = []
    by_class: dict[str, list] = {}
    for v in tiny_clips(root):
        by_class.setdefault(v.class_name, []).append(v)
    for cls, videos in by_class.items():
        label = LABELS[cls]
        folder = label.split()[0]
        for n, v in enumerate(videos):
            rel = f"clips/{folder}/{n:02d}.mp4"
            transcode(root / "UCF-101" / v.rel_path, out / rel)
            rows.append({"path": rel, "label": label, "split": v.split, "start_s": "", "end_s": ""})
    # a longer video: two train clips of "ringing bell" back to back; each second is one clip
    train = [v for v in by_class["Synth01RingC"] if v.split == "train"]
    parts = [root / "UCF-101" / v.rel_path for v in train[:2]]
    listing = out / "concat.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    long = out / "long" / "ringing session.mp4"
    long.parent.mkdir(parents=True)
    video, audio = CODECS[".mp4"]
    ffmpeg("-f", "concat", "-safe", "0", "-i", listing, *video, *audio, *BITEXACT, long)
    listing.unlink()
    for start, end in ((0.0, 1.0), (1.0, 2.0)):
        rows.append({"path": "long/ringing session.mp4", "label": "ringing bell", "split": "train",
                     "start_s": f"{start:g}", "end_s": f"{end:g}"})
    # sound that stops early: a test clip of "sliding door" with its audio cut to 0.3 s
    src = root / "UCF-101" / next(v for v in by_class["Synth02HorizontalFs"] if v.split == "test").rel_path
    transcode(src, out / "clips" / "sliding" / "short sound.mp4", "-af", "atrim=0:0.3")
    rows.append({"path": "clips/sliding/short sound.mp4", "label": "sliding door", "split": "test",
                 "start_s": "", "end_s": ""})
    rows.append({"path": "clips/sliding/never recorded.mp4", "label": "sliding door", "split": "test",
                 "start_s": "", "end_s": ""})
    with open(out / "annotations.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "split", "start_s", "end_s"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return {"windows": ["long__ringing_session_0_1000", "long__ringing_session_1000_2000"],
            "short_sound": "clips__sliding__short_sound", "missing": "clips__sliding__never_recorded",
            "rows": len(rows)}


KINETICS = {  # tiny class -> a Kinetics-400 label: three of Kinetics-Sounds' classes and one other
    "Synth01RingC": "playing bagpipes", "Synth02HorizontalFs": "playing drums", "Synth03HorizontalDs": "tap dancing",
    "Synth04VerticalMute": "abseiling",
}


def make_kinetics(root: Path, out: Path) -> dict:
    """Kinetics' layout: ``kinetics_train.csv`` and ``kinetics_val.csv`` (``label,youtube_id,time_start,
    time_end,split,is_cc``); train clips under ``train/<label with underscores>/``, validation clips in one flat
    folder ``val/``, each named ``<youtube_id>_<start:06d>_<end:06d>.mp4``; one listed clip never downloaded."""
    header = ["label", "youtube_id", "time_start", "time_end", "split", "is_cc"]
    rows = {"train": [], "val": []}
    for n, v in enumerate(tiny_clips(root)):
        label = KINETICS[v.class_name]
        split = "train" if v.split == "train" else "val"
        youtube_id, start = f"yt{n:03d}-{v.class_name[-4:]}", 10 * n
        name = f"{youtube_id}_{start:06d}_{start + 10:06d}.mp4"
        folder = out / "train" / label.replace(" ", "_") if split == "train" else out / "val"
        transcode(root / "UCF-101" / v.rel_path, folder / name)
        rows[split].append([label, youtube_id, str(start), str(start + 10), split, "0"])
    rows["val"].append(["playing drums", "neverdownloaded", "30", "40", "val", "0"])
    for split, body in rows.items():
        with open(out / f"kinetics_{split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(body)
    return {"missing": "neverdownloaded_000030_000040"}
