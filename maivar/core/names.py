"""Names the pipeline gives files, made from text it does not control (a label, a clip id, a file name).

A label is data: it is never a path, markup or a file name. Where a label or id must name something (a
preview PNG, a class in ``metrics/confusion.csv``, which DVC renders into its HTML page), the name is
:func:`safe_name` of it:

- a *plain* text (ASCII letters, digits, ``.``, ``_``, ``-``; starting with a letter or digit; no ``--``; at
  most :data:`PLAIN_MAX` characters) is its own name, so UCF101's ``ApplyEyeMakeup`` stays ``ApplyEyeMakeup``;
- anything else becomes ``<slug>--<hash>``: the slug keeps up to 40 of its plain characters (each run of other
  characters is one ``_``), the hash is the first 12 hex digits of the SHA-256 of its UTF-8 bytes. Only these
  names hold ``--``, so a plain name never equals the name of another text.

:func:`short_id` bounds a clip id (which names the WAV) below the file system's 255-byte name limit, the same
way: an id over :data:`ID_MAX_BYTES` keeps a prefix and gets the hash of the whole id.
"""

from __future__ import annotations

import hashlib
import os
import re

PLAIN_MAX = 100  # characters: a plain text longer than this is hashed (file names stay far below 255 bytes)
ID_MAX_BYTES = 180  # a clip id's bytes; its files add at most ~20 (".<id>.wav.part", "<class>__<id>.png")
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_OTHER = re.compile(r"[^A-Za-z0-9.]+")


def text_hash(text: str) -> str:
    """The first 12 hex digits of the SHA-256 of ``text``'s UTF-8 bytes (undecodable file-name bytes kept)."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def is_plain(text: str, *, max_len: int = PLAIN_MAX, forbid: tuple[str, ...] = ()) -> bool:
    """Whether ``text`` is its own :func:`safe_name` (see the module docstring); ``forbid``: substrings a plain
    name must not hold besides ``--`` (e.g. ``__``, a separator of the names it is part of)."""
    return (len(text) <= max_len and _PLAIN.fullmatch(text) is not None
            and not any(s in text for s in ("--", *forbid)))


def safe_name(text: str, *, forbid: tuple[str, ...] = ()) -> str:
    """A file name for ``text`` (a label or an id): ``text`` itself when it is plain, else ``<slug>--<hash>``.
    Never empty, never ``.`` or ``..``, never holds ``/``, markup characters, ``__`` or a control character."""
    if is_plain(text, forbid=forbid):
        return text
    slug = _OTHER.sub("_", text).strip("._")[:40].strip("._") or "x"
    return f"{slug}--{text_hash(text)}"


def short_id(clip_id: str) -> str:
    """``clip_id`` when it has at most :data:`ID_MAX_BYTES` bytes (UTF-8), else a prefix of it and ``--<hash>`` of
    the whole id: deterministic, and distinct for distinct ids (up to the hash's 48 bits; a listing still checks
    that ids are unique). An id that could not name a file (empty, ``.``, ``..``, holding ``/`` or NUL) is
    replaced by its :func:`safe_name`."""
    if clip_id in ("", ".", "..") or "/" in clip_id or "\0" in clip_id:
        return safe_name(clip_id)
    raw = clip_id.encode("utf-8", "surrogateescape")
    if len(raw) <= ID_MAX_BYTES:
        return clip_id
    prefix = raw[: ID_MAX_BYTES - 14].decode("utf-8", "ignore")
    return f"{prefix}--{text_hash(clip_id)}"


def local_path(path: str) -> str:
    """``path`` as a string no demuxer reads as a URL: FFmpeg takes ``<letters>:...`` before the first ``/`` as a
    protocol (``file:x``, ``concat:a|b``, ``http:x``), so a relative path whose first part holds ``:`` gets ``./``
    in front; every other path is returned as it is (absolute paths and ``data/...`` are files already)."""
    if os.path.isabs(path) or ":" not in path.split("/", 1)[0]:
        return path
    return "./" + path
