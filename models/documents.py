"""Model documents are hostile input: validation helpers for the models' ``from_dict``.

Model documents arrive over Kafka from anyone who can produce to the models topic, so a loader
must check every shape and value before it builds anything: a value that loads but fails on the
hot path (a NaN weight, an out-of-range index) is worse than a refusal at load time, and a small
document that declares a huge size must not make the loader allocate it. Every check here raises
:class:`DocumentError` with a short reason; sizes are compared before anything is allocated.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

FORMAT_VERSION = 1
SUPPORTED_FORMATS = frozenset({1})
# The largest array a document may hold or declare: a 32 MiB model of float64.
MAX_ELEMENTS = 32 * 2**20 // 8
# Magnitude bound of model numbers: products of a few of them stay finite in float64.
MAX_MAGNITUDE = 1e100
MAX_VERSION = 2**53  # integers JSON readers in other languages still hold exactly
SHOW = 40  # longest quoted value in a message


class DocumentError(ValueError):
    """A model document that must not be loaded; the message is a short reason."""


def show(value: Any) -> str:
    """A short, safe rendering of a value for an error message (never repr of a container,
    whose repr may be huge or recurse without end)."""
    if isinstance(value, str):
        return repr(value[:SHOW]) + ("..." if len(value) > SHOW else "")
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return repr(value) if abs(value) < 10**30 else f"an int of {value.bit_length()} bits"
    if isinstance(value, float):
        return repr(value)
    return f"a {type(value).__name__}"


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, (float, np.floating))


def number(
    value: Any,
    where: str,
    lo: float = -MAX_MAGNITUDE,
    hi: float = MAX_MAGNITUDE,
    lo_open: bool = False,
) -> float:
    """A finite float in [lo, hi] (or (lo, hi] with `lo_open`); ints are compared before their
    conversion, so 10**400 is refused instead of raising OverflowError."""
    if not _is_number(value):
        raise DocumentError(f"{where}: expected a number, got {show(value)}")
    if _is_int(value):
        value = int(value)
        if not lo <= value <= hi:
            raise DocumentError(f"{where}: {show(value)} is out of range")
        value = float(value)
    value = float(value)
    if not math.isfinite(value):
        raise DocumentError(f"{where}: {show(value)} is not finite")
    if value < lo or value > hi or (lo_open and value == lo):
        raise DocumentError(f"{where}: {show(value)} is out of range")
    return value


def lower_bound(value: Any, where: str) -> float:
    """A VB lower bound: finite, or -inf, which the fit writes when no iteration had a finite
    bound (prediction never reads it)."""
    if isinstance(value, float) and value == -math.inf:
        return value
    return number(value, where)


def integer(value: Any, where: str, lo: int, hi: int) -> int:
    """An int in [lo, hi]: bools are refused, integral floats (3.0) accepted, others refused."""
    if isinstance(value, (float, np.floating)) and not isinstance(value, bool):
        if not math.isfinite(value) or not float(value).is_integer():
            raise DocumentError(f"{where}: expected an integer, got {show(float(value))}")
        if not lo <= value <= hi:
            raise DocumentError(f"{where}: {show(float(value))} is out of range")
        return int(value)
    if not _is_int(value):
        raise DocumentError(f"{where}: expected an integer, got {show(value)}")
    if not lo <= int(value) <= hi:
        raise DocumentError(f"{where}: {show(int(value))} is out of range")
    return int(value)


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise DocumentError(f"{where}: expected true or false, got {show(value)}")
    return bool(value)


def string(value: Any, where: str, max_len: int, min_len: int = 0) -> str:
    if not isinstance(value, str):
        raise DocumentError(f"{where}: expected a string, got {show(value)}")
    if not min_len <= len(value) <= max_len:
        raise DocumentError(f"{where}: string length {len(value)} not in {min_len}..{max_len}")
    return value


def choice(value: Any, where: str, allowed: Sequence[Any]) -> Any:
    """One of a few allowed scalars (compared only when hashable and simple)."""
    if not (value is None or isinstance(value, (str, int, float))) or value not in allowed:
        raise DocumentError(f"{where}: {show(value)} is not one of {list(allowed)}")
    return value


def sequence(value: Any, where: str, max_len: int, min_len: int = 0) -> list[Any]:
    """A list (or tuple) with a bounded length; its items are the caller's to check."""
    if not isinstance(value, (list, tuple)):
        raise DocumentError(f"{where}: expected a list, got {show(value)}")
    if not min_len <= len(value) <= max_len:
        raise DocumentError(f"{where}: length {len(value)} not in {min_len}..{max_len}")
    return list(value)


def mapping(
    value: Any, where: str, required: Sequence[str], optional: Sequence[str] = ()
) -> dict[str, Any]:
    """A dict with every required key and no unknown one (a format change bumps the version)."""
    if not isinstance(value, dict):
        raise DocumentError(f"{where}: expected an object, got {show(value)}")
    missing = [k for k in required if k not in value]
    if missing:
        raise DocumentError(f"{where}: missing {show(missing[0])}")
    known = set(required) | set(optional)
    unknown = [k for k in value if k not in known]
    if unknown:
        raise DocumentError(f"{where}: unknown key {show(unknown[0])}")
    return value


def header(d: Any, kind: str, required: Sequence[str], optional: Sequence[str] = ()) -> dict:
    """The document's kind and format version, then its keys. A document without
    ``format_version`` was written by the release before it had one: format 1."""
    if not isinstance(d, dict):
        raise DocumentError(f"{kind}: expected an object, got {show(d)}")
    if d.get("kind") != kind:
        raise DocumentError(f"{kind}: wrong kind {show(d.get('kind'))}")
    fmt = integer(d.get("format_version", 1), f"{kind}.format_version", 0, MAX_VERSION)
    if fmt not in SUPPORTED_FORMATS:
        raise DocumentError(f"{kind}: unsupported format_version {fmt}")
    return mapping(d, kind, ["kind", *required], ["format_version", *optional])


def _walk_shape(value: Any, shape: Sequence[int | None], where: str) -> list[int]:
    """The dimensions of a nested list, from its first element at each level (None in `shape`:
    any size), with the element count checked before any allocation."""
    dims: list[int] = []
    node = value
    for expected in shape:
        if not isinstance(node, (list, tuple)):
            raise DocumentError(f"{where}: expected a nested list of depth {len(shape)}")
        n = len(node)
        if expected is not None and n != expected:
            raise DocumentError(f"{where}: expected {expected} items, got {n}")
        dims.append(n)
        if math.prod(dims) > MAX_ELEMENTS:
            raise DocumentError(f"{where}: more than {MAX_ELEMENTS} elements")
        if n == 0:  # nothing below to look at: the declared sizes, or 0
            return dims + [e or 0 for e in shape[len(dims) :]]
        node = node[0]
    return dims


def array(
    value: Any,
    where: str,
    shape: Sequence[int | None],
    lo: float = -MAX_MAGNITUDE,
    hi: float = MAX_MAGNITUDE,
) -> np.ndarray:
    """A float64 array from nested lists of exactly `shape` (None: any size, the same for every
    row): counted first, ragged lists refused, every element a finite number in [lo, hi]."""
    dims = _walk_shape(value, shape, where)
    level: list[Any] = [value]
    for n in dims:
        nxt: list[Any] = []
        for node in level:
            if not isinstance(node, (list, tuple)) or len(node) != n:
                raise DocumentError(f"{where}: ragged or malformed nested list")
            nxt.extend(node)
        level = nxt
    if not all(type(v) is float for v in level):
        level = [number(v, where, lo, hi) for v in level]
    out = np.array(level, dtype=np.float64).reshape(dims)
    _check_floats(out, where, lo, hi)
    return out


def _check_floats(a: np.ndarray, where: str, lo: float, hi: float) -> None:
    if not np.isfinite(a).all():
        raise DocumentError(f"{where}: holds a non-finite number")
    if a.size and (a.min() < lo or a.max() > hi):
        raise DocumentError(f"{where}: holds a number out of range")


def b64_floats(
    value: Any,
    where: str,
    count: int,
    lo: float = -MAX_MAGNITUDE,
    hi: float = MAX_MAGNITUDE,
) -> np.ndarray:
    """`count` little-endian float64 from base64: the text's length is checked against `count`
    before it is decoded, and every value must be finite and in [lo, hi]."""
    if not 0 <= count <= MAX_ELEMENTS:
        raise DocumentError(f"{where}: {count} elements is out of range")
    expected = 4 * math.ceil(8 * count / 3)
    if not isinstance(value, str):
        raise DocumentError(f"{where}: expected a base64 string, got {show(value)}")
    if len(value) != expected:
        raise DocumentError(f"{where}: expected {count} float64 ({expected} base64 chars)")
    if not value.isascii():
        raise DocumentError(f"{where}: not base64")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise DocumentError(f"{where}: not base64") from exc
    if len(raw) != 8 * count:
        raise DocumentError(f"{where}: expected {count} float64")
    out = np.frombuffer(raw, dtype="<f8").astype(np.float64)
    _check_floats(out, where, lo, hi)
    return out


def int_list(value: Any, where: str, length: int, lo: int, hi: int) -> np.ndarray:
    """Exactly `length` ints in [lo, hi] (its length compared before its items are read)."""
    if not 0 <= length <= MAX_ELEMENTS:
        raise DocumentError(f"{where}: {length} elements is out of range")
    items = sequence(value, where, length, length)
    for v in items:
        if type(v) is not int or not lo <= v <= hi:
            raise DocumentError(f"{where}: {show(v)} is not an integer in {lo}..{hi}")
    return np.array(items, dtype=np.int64)


def strings(
    value: Any, where: str, max_len: int, max_chars: int, min_len: int = 0, unique: bool = True
) -> list[str]:
    """A list of strings, each at most `max_chars` long, unique unless told otherwise."""
    items = sequence(value, where, max_len, min_len)
    if not all(type(s) is str and len(s) <= max_chars for s in items):  # fast path first
        for s in items:
            string(s, where, max_chars)
    if unique and len(set(items)) != len(items):
        raise DocumentError(f"{where}: duplicate strings")
    return items


@contextmanager
def loading(kind: str) -> Iterator[None]:
    """Last-resort net around a loader: an exception the precise checks missed still leaves as
    DocumentError (message "unexpected ..."), so callers have one error to handle."""
    try:
        yield
    except DocumentError:
        raise
    except (
        ArithmeticError,
        AttributeError,
        LookupError,
        MemoryError,
        RuntimeError,
        TypeError,
        ValueError,
    ) as exc:
        raise DocumentError(f"{kind}: unexpected {type(exc).__name__}") from exc
