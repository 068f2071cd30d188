"""The machinery of typed settings: a checked field per params.yaml key, a frozen dataclass per section.

A section type (:class:`Section`) is a frozen dataclass whose fields are params.yaml's keys, each declared with
:func:`setting` and a *check* (:class:`Int`, :class:`Float`, :class:`Choice`, ...). ``Type.from_params(params)``
converts the section once: every key is present, has its type and lies in its range, and no key is unknown.
Anything else is a :class:`SettingsError`: one line naming the dotted key, the value, what is allowed and, for
an unknown key, the nearest valid one::

    params.yaml render.image_size: 100000 is not allowed (an integer from 16 to 4096)
    params.yaml extract_audio.pretraind: unknown key (did you mean extract_audio.pretrained?)

Frozen dataclasses, not pydantic: the checks are a few lines each, the messages are ours word for word, nothing
is coerced silently (pydantic turns ``"1"`` into ``1`` and ``1.5`` into an error text of several lines), and the
settings import in milliseconds with no dependency beyond the standard library.

A section also writes and reads the attributes of the stores it makes (:meth:`Section.to_attrs`,
:meth:`Section.from_attrs`), so that ``maivar predict`` rebuilds the exact settings of a store through the same
checks, without a second mapping.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from maivar.core.errors import PipelineError

__all__ = ["Bool", "Check", "Choice", "Float", "Int", "ListOf", "MappingOf", "Optional", "Pattern", "Section",
           "SettingsError", "Text", "nearest", "setting"]


class SettingsError(PipelineError):
    """A parameter that is missing, unknown, of the wrong type or out of range (one line)."""


def _show(value: Any) -> str:
    """A value as the user wrote it, on one line and bounded (a label or a path is data, not a size)."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = repr(value)
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= 80 else text[:77] + "..."


def nearest(word: str, choices: Sequence[str]) -> str | None:
    """The choice closest to ``word`` (a misspelling), or None when nothing is close: the same word in other case
    or with its letters swapped (``rl`` for ``lr``), else difflib's closest."""
    word, choices = str(word), [str(c) for c in choices]
    for c in choices:
        if c.lower() == word.lower() or sorted(c.lower()) == sorted(word.lower()):
            return c
    for c in choices:  # a part of a longer name (size for image_size)
        if len(word) >= 4 and word.lower() in c.lower().split("_"):
            return c
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return found[0] if found else None


class Check:
    """Checks and converts one value; ``allowed`` says what is allowed, in words."""

    allowed = "a value"

    def __call__(self, value: Any, key: str, where: str) -> Any:
        raise NotImplementedError

    def fail(self, value: Any, key: str, where: str, extra: str = "") -> SettingsError:
        return SettingsError(f"{where} {key}: {_show(value)} is not allowed ({self.allowed}){extra}")


def _range_words(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return (f"from {lo} to {hi}" if not (lo_open or hi_open)
                else f"{'>' if lo_open else '>='} {lo} and {'<' if hi_open else '<='} {hi}")
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi}"
    return ""


class Int(Check):
    """An integer in ``[lo, hi]`` (a float with an integral value is taken; true/false are not numbers)."""

    def __init__(self, lo: int | None = None, hi: int | None = None):
        self.lo, self.hi = lo, hi
        self.allowed = f"an integer {_range_words(lo, hi)}".rstrip()

    def __call__(self, value, key, where):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(value, key, where)
        if isinstance(value, float) and not (math.isfinite(value) and value == int(value)):
            raise self.fail(value, key, where)
        value = int(value)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise self.fail(value, key, where)
        return value


class Float(Check):
    """A finite number in a range (``lo_open``/``hi_open``: the bound itself excluded); NaN and inf never pass."""

    def __init__(self, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        self.allowed = f"a finite number {_range_words(lo, hi, lo_open, hi_open)}".rstrip()

    def __call__(self, value, key, where):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(value, key, where)
        number = float(value)
        if self.lo is not None and (number <= self.lo if self.lo_open else number < self.lo):
            raise self.fail(value, key, where)
        if self.hi is not None and (number >= self.hi if self.hi_open else number > self.hi):
            raise self.fail(value, key, where)
        return number


class Bool(Check):
    allowed = "true or false"

    def __call__(self, value, key, where):
        if not isinstance(value, bool):
            raise self.fail(value, key, where)
        return value


class Choice(Check):
    """One of a fixed vocabulary (strings, or other YAML scalars)."""

    def __init__(self, choices: Sequence):
        self.choices = tuple(choices)
        self.allowed = "one of " + ", ".join(_show(c) for c in self.choices)

    def __call__(self, value, key, where):
        if isinstance(value, bool) or value not in self.choices:
            close = nearest(value, [str(c) for c in self.choices]) if isinstance(value, str) else None
            raise self.fail(value, key, where, f"; did you mean {close}?" if close else "")
        return value


class Text(Check):
    """A non-empty string of at most ``max_len`` characters, on one line."""

    def __init__(self, max_len: int = 4096, what: str = "a non-empty string"):
        self.max_len = max_len
        self.allowed = f"{what} of at most {max_len} characters, on one line"

    def __call__(self, value, key, where):
        if (not isinstance(value, str) or not value.strip() or len(value) > self.max_len
                or any(c in value for c in "\n\r\0")):
            raise self.fail(value, key, where)
        return value


class Pattern(Check):
    """A string matching a regular expression in full."""

    def __init__(self, regex: str, allowed: str):
        self.regex = re.compile(regex)
        self.allowed = allowed

    def __call__(self, value, key, where):
        if not isinstance(value, str) or not self.regex.fullmatch(value):
            raise self.fail(value, key, where)
        return value


class Optional(Check):
    """null, or what ``inner`` allows."""

    def __init__(self, inner: Check):
        self.inner = inner
        self.allowed = f"null or {inner.allowed}"

    def __call__(self, value, key, where):
        if value is None:
            return None
        try:
            return self.inner(value, key, where)
        except SettingsError:
            raise self.fail(value, key, where) from None


class ListOf(Check):
    """A list (stored as a tuple) of ``min_len`` to ``max_len`` items, each checked by ``item``."""

    def __init__(self, item: Check, min_len: int = 0, max_len: int = 64):
        self.item, self.min_len, self.max_len = item, min_len, max_len
        self.allowed = f"a list of {min_len} to {max_len} items, each {item.allowed}"

    def __call__(self, value, key, where):
        if not isinstance(value, (list, tuple)) or not self.min_len <= len(value) <= self.max_len:
            raise self.fail(value, key, where)
        return tuple(self.item(v, f"{key}[{i}]", where) for i, v in enumerate(value))


class MappingOf(Check):
    """A mapping from keys of a fixed vocabulary (all optional) to values checked by ``value``; an unknown key is
    refused with the nearest valid one. Stored as a sorted tuple of pairs (hashable, frozen)."""

    def __init__(self, keys: Sequence[str], value: Check, *, required: bool = False):
        self.keys, self.value, self.required = tuple(keys), value, required
        self.allowed = (f"a mapping {'of every one' if required else 'from some'} of {', '.join(self.keys)} "
                        f"to {value.allowed}")

    def __call__(self, value, key, where):
        if not isinstance(value, Mapping):
            raise self.fail(value, key, where)
        for k in value:
            if k not in self.keys:
                raise unknown_key(f"{key}.{k}", key, self.keys, where)
        if self.required and set(value) != set(self.keys):
            missing = sorted(set(self.keys) - set(value))
            raise SettingsError(f"{where} {key}.{missing[0]} is missing ({self.value.allowed})")
        return tuple(sorted((k, self.value(v, f"{key}.{k}", where)) for k, v in value.items()))


def unknown_key(dotted: str, parent: str | None, valid: Sequence[str], where: str) -> SettingsError:
    leaf = dotted.rsplit(".", 1)[-1]
    close = nearest(leaf, valid)
    hint = f"did you mean {parent + '.' if parent else ''}{close}?" if close else f"allowed: {', '.join(valid)}"
    return SettingsError(f"{where} {dotted}: unknown key ({hint})")


def setting(check: Check, doc: str = "") -> Any:
    """A section field: its check and a one-line description (``maivar check-params`` and the docs show it)."""
    return dataclasses.field(metadata={"check": check, "doc": doc})


@dataclasses.dataclass(frozen=True)
class Section:
    """Base of the section types: ``SECTION`` is the params.yaml section the type reads."""

    SECTION: ClassVar[str] = ""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, data: Any, *, section: str | None = None, where: str = "params.yaml"):
        """``data`` (one section's mapping) checked and converted: every key known, present and allowed."""
        name = section or cls.SECTION
        if not isinstance(data, Mapping):
            raise SettingsError(f"{where} {name}: {_show(data)} is not allowed (a mapping of "
                                f"{', '.join(cls.keys())})")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in data:
            if key not in fields:
                raise unknown_key(f"{name}.{key}", name, tuple(fields), where)
        values = {}
        for key, f in fields.items():
            if key not in data:
                check = f.metadata.get("check")
                allowed = check.allowed if check else "a mapping"
                raise SettingsError(f"{where} {name}.{key} is missing ({allowed})")
            if f.metadata.get("section"):  # a nested section (runtime.extract_audio)
                values[key] = f.metadata["section"].from_mapping(data[key], section=f"{name}.{key}", where=where)
            else:
                values[key] = f.metadata["check"](data[key], f"{name}.{key}", where)
        made = cls(**values)
        made.validate(where, name)
        return made

    @classmethod
    def from_params(cls, params: Mapping, section: str | None = None, *, where: str | None = None):
        """The section ``section`` (default ``SECTION``) of a whole params mapping (:func:`read_params`)."""
        name = section or cls.SECTION
        where = where or getattr(params, "where", "params.yaml")
        if name not in params:
            raise SettingsError(f"{where} has no {name} section: copy it from the repository's params.yaml")
        return cls.from_mapping(params[name], section=name, where=where)

    def validate(self, where: str, name: str) -> None:
        """Checks across keys (override); raise :class:`SettingsError`."""

    def as_dict(self) -> dict:
        """Plain values, as params.yaml holds them (tuples as lists, pair tuples as mappings)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Section):
                value = value.as_dict()
            elif isinstance(f.metadata.get("check"), MappingOf):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def to_attrs(self, prefix: str | None = None, *, exclude: Sequence[str] = ()) -> dict:
        """Store attributes ``<prefix>.<key>``: every setting but ``exclude`` (a store's writer adds what it
        derived, e.g. the mean/std a model resolved to)."""
        prefix = self.SECTION if prefix is None else prefix
        return {f"{prefix}.{k}": v for k, v in self.as_dict().items() if k not in exclude}

    @classmethod
    def from_attrs(cls, attrs: Mapping, prefix: str | None = None, *, where: str = "the store",
                   defaults: Mapping | None = None):
        """The settings a store recorded with :meth:`to_attrs`, through the same checks; ``defaults`` fills the
        keys a store made by an older maivar lacks (a store of ``exclude``-d keys needs them too)."""
        prefix = cls.SECTION if prefix is None else prefix
        data = dict(defaults or {})
        data.update({k[len(prefix) + 1:]: decoded_attr(v) for k, v in attrs.items() if k.startswith(prefix + ".")})
        return cls.from_mapping(data, section=prefix, where=where)


def decoded_attr(value):
    """An HDF5 attribute as it was written (lists, mappings and None are stored as JSON text)."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and (value == "null" or value[:1] in "[{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def nested(section_type: type[Section], doc: str = "") -> Any:
    """A field holding a nested section (``runtime.extract_audio``)."""
    return dataclasses.field(metadata={"section": section_type, "doc": doc})


# The top-level keys of params.yaml, in its order: every one is a section but ``representation`` (a scalar).
TOP_LEVEL = ("representation", "dataset", "synthesize", "prepare", "render", "extract_audio", "extract_video",
             "train", "audio_mlp", "video_mlp", "fusion_mlp", "runtime")


class Params(dict):
    """params.yaml's mapping, and ``where`` it was read from (the messages name the file)."""

    where = "params.yaml"


def read_params(path: str = "params.yaml") -> Params:
    """params.yaml as a mapping, its top-level keys checked (a misspelt section is an unknown key); each stage
    then converts the sections it reads with their types."""
    from maivar.core.params import load_params

    params = Params(load_params(path))
    params.where = str(path)
    return check_top_level(params)


def check_top_level(params: Params) -> Params:
    """``params`` if each of its top-level keys is a section of :data:`TOP_LEVEL` (else the nearest one, in one
    line)."""
    for key in params:
        if key not in TOP_LEVEL:
            raise unknown_key(str(key), None, TOP_LEVEL, params.where)
    return params
