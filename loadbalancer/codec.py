"""The codec for the arguments and results of users' functions: data only, as bytes.

A job's input and its result cross the network and process boundaries as bytes. Nothing
here pickles or evaluates: the codec carries *data*, and refuses anything else with
:class:`CodecError`:

- JSON values: None, bool, int, float (nan and infinities too), str, list, dict with str keys;
- ``bytes`` (``bytearray`` and ``memoryview`` encode as bytes too), tuples (decode as lists);
- ints of any size up to 4,300 decimal digits, CPython's own limit for int/str conversion;
- numpy arrays of any shape and any dtype that ``numpy.lib.format`` can describe and that
  holds no Python objects (records, bool, complex, datetime64, strings...); numpy scalars,
  which decode as the same scalar type.

Encoded, a value is::

    !I tree length | tree (msgpack) | padding | buffer | padding | buffer ...

Why msgpack: a well-kept format with a fast C implementation, native bytes, and
extension types for what JSON lacks. Extension 1 is an array and 2 a numpy scalar, each
a small msgpack list ``[dtype description, shape, offset, length]``; extension 3 is an int
beyond 64 bits, as its decimal text. The buffers lie out of band, after the tree: the
buffer area starts at the first multiple of 16 after the tree, and each buffer, in the
order its array appears in the tree, at the next multiple of 16 (``offset`` counts from
the start of the area). So every buffer is 16-byte aligned from the start of the data,
and a decoded array is aligned whenever the data is. Decoding insists on exactly this
layout: no buffer overlaps another, none lies outside the data, nothing follows the last.

Out of band, because arrays are the big part of scientific data: encoding copies an
array's bytes once, into the joined output (a non-contiguous array is first made
contiguous, in C order: a second copy), and :func:`decode` copies none: its arrays are
views of the data it was given (``np.frombuffer``), writable if the data was writable (a
bytearray), read-only if not (bytes). They keep the data alive, and a bytearray cannot be
resized while they exist.

Decoding meets hostile bytes, so every size, offset, shape and dtype description is
checked before use, nesting is bounded (:data:`MAX_DEPTH`) on both sides, and whatever
msgpack or numpy raise on malformed input comes out as :class:`CodecError`.

Cost (Python 3.11, msgpack 1.2, numpy 2.4, one core of the 2-core dev machine, best of
several runs): encode + decode of ``[[123], {}]`` takes 4 µs. msgpack checks neither
depth nor dict keys, so we walk the containers first; a container's elements are looked
at by C loops (``map(type, ...)``), so 100,000 floats encode in 3.3 ms (msgpack alone
1.6) and decode in 4.1 ms (2.5), but each small dict costs about 1 µs of walking on each
side: 10,000 records with a nested list take 12 ms to encode and 14 ms to decode (msgpack
alone 3 and 5). Each array adds about 5 µs each way. A 100 MB float64 array encodes in
50 ms (one copy: the output) and decodes in 5 µs (no copy).

The arrays' description and checks are :mod:`loadbalancer.arrays`; the same values' JSON
form, for the files people read and write, is :mod:`loadbalancer.jsonform`.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import msgpack
import numpy as np

from loadbalancer.arrays import ALIGNMENT, MAX_ARRAY_HEADER, _align, _Arrays, _describe, _scalar
from loadbalancer.codecerror import CodecError as CodecError
from loadbalancer.codecerror import _a, _one_line, _Reject, _short

MAX_DEPTH: Final = 100  # containers inside containers, the outermost counting as 1
MAX_INT_DIGITS: Final = 4300

_HEADER: Final = struct.Struct("!I")
_EXT_ARRAY: Final = 1
_EXT_SCALAR: Final = 2
_EXT_INT: Final = 3
_INT_MIN: Final = -(2**63)  # msgpack's native ints: int64 and uint64
_UINT_MAX: Final = 2**64 - 1
# An int of MAX_INT_DIGITS digits has at most this many bits: longer ones are refused before
# str() is asked to convert them, which is quadratic when the interpreter's limit is off.
_MAX_INT_BITS: Final = math.ceil(MAX_INT_DIGITS * math.log2(10))
_INT_TEXT: Final = re.compile(rb"-?[0-9]{1,%d}" % MAX_INT_DIGITS)
_PADDING: Final = bytes(ALIGNMENT - 1)
_STR: Final = frozenset({str})
# Exact types that contain nothing and that msgpack packs or our hook checks: a container
# whose elements are all of these needs no walk. Subclasses (an OrderedDict, a namedtuple)
# are not here on purpose: they may be containers.
_LEAVES: Final = frozenset(
    {type(None), bool, int, float, str, bytes, bytearray, np.ndarray}
    | {np.bool_, np.int32, np.int64, np.float32, np.float64}
)
_SHOWN_STEPS: Final = 8
_ExtType: Final = msgpack.ExtType
_Timestamp: Final = msgpack.Timestamp

_Path = list[object]  # list indices and dict keys


# --- bytes -------------------------------------------------------------------------------


def encode(value: object) -> bytes:
    """The bytes of ``value``; :class:`CodecError` says what cannot be encoded and where."""
    return _encode(value, 1, _value_path)


def decode(data: bytes | bytearray | memoryview) -> object:
    """The value that :func:`encode` gave ``data`` for.

    Arrays are views of ``data``, not copies: writable if ``data`` is writable (a
    bytearray), read-only otherwise. Any malformed input raises :class:`CodecError`.
    """
    return _decode(data, 1, _value_path)


def encode_call(args: Sequence[object], kwargs: Mapping[str, object]) -> bytes:
    """The bytes of a job's input: its positional and keyword arguments."""
    # The two wrapping levels do not count against MAX_DEPTH: each argument has all of it.
    return _encode([list(args), dict(kwargs)], -1, _call_path)


def decode_call(data: bytes | bytearray | memoryview) -> tuple[list[object], dict[str, object]]:
    """The ``(args, kwargs)`` that :func:`encode_call` gave ``data`` for."""
    value = _decode(data, -1, _call_path)
    if type(value) is list and len(value) == 2:
        args, kwargs = value
        if type(args) is list and type(kwargs) is dict:
            return args, kwargs
    raise CodecError("cannot decode a call: the value is not [args, kwargs]")


def _encode(value: object, depth: int, where: Callable[[_Path], str]) -> bytes:
    encoder = _Encoder()
    try:
        _check(value, depth)
        packer = msgpack.Packer(default=encoder.default, use_bin_type=True, strict_types=True)
        return encoder.join(packer.pack(value))
    except _Reject as exc:
        place = _where(value, exc.obj, depth, where)
        raise CodecError(f"cannot encode {exc.what} at {place}") from None
    except UnicodeEncodeError as exc:  # msgpack encodes str to UTF-8 itself
        place = _where(value, exc.object, depth, where)
        raise CodecError(f"cannot encode a str with a lone surrogate at {place}") from None
    except Exception as exc:  # msgpack's own limits (a str over 4 GiB), memory
        raise CodecError(f"cannot encode {where([])}: {_one_line(exc)}") from exc


def _decode(
    data: bytes | bytearray | memoryview, depth: int, where: Callable[[_Path], str]
) -> object:
    try:
        value = _unpack(_byte_view(data))
        _check(value, depth)
    except CodecError:
        raise
    except _Reject as exc:
        place = _where(value, exc.obj, depth, where)
        raise CodecError(f"cannot decode {exc.what} at {place}") from None
    except Exception as exc:  # anything msgpack or numpy raise on hostile bytes is our error
        raise CodecError(f"cannot decode: {_one_line(exc)}") from exc
    return value


def _check(value: object, depth: int) -> None:
    """Raise :class:`_Reject` for what msgpack would take without asking our hook.

    That is: nesting past MAX_DEPTH, dict keys that are not str (msgpack packs any key,
    and unpacks bytes keys), its own ExtType and Timestamp (which we never make, so a
    decoded one was forged), and memoryviews that it cannot take. Everything else that
    is not plain JSON reaches :meth:`_Encoder.default`.
    """
    children: Iterable[object]
    if isinstance(value, dict):
        if not _STR.issuperset(map(type, value)):
            _check_keys(value)
        children = value.values()
    elif isinstance(value, (list, tuple)):
        if type(value) is _ExtType:
            raise _Reject(value, "a msgpack ExtType")
        children = value
    else:
        if type(value) is memoryview:
            _check_memoryview(value)
        elif type(value) is _Timestamp:
            raise _Reject(value, "a msgpack Timestamp")
        return
    if depth > MAX_DEPTH:
        raise _Reject(value, f"{_a(value)} nested more than {MAX_DEPTH} deep")
    # map() and issuperset() run in C: a big list of numbers costs no Python loop.
    if not _LEAVES.issuperset(map(type, children)):
        for child in children:
            if type(child) not in _LEAVES:
                _check(child, depth + 1)


def _check_keys(value: dict[object, object]) -> None:
    for key in value:
        if not isinstance(key, str):
            raise _Reject(value, f"a dict with {_a(key)} key ({reprlib.repr(key)})")


def _check_memoryview(view: memoryview) -> None:
    try:
        contiguous = view.c_contiguous
    except ValueError:
        raise _Reject(view, "a released memoryview") from None
    if not contiguous:
        raise _Reject(view, "a memoryview that is not C-contiguous (pass its .tobytes())")


class _Encoder:
    """The packer's ``default`` hook for one encode; it collects the out-of-band buffers."""

    __slots__ = ("buffers", "end")

    def __init__(self) -> None:
        self.buffers: list[tuple[int, memoryview]] = []  # (offset in the buffer area, bytes)
        self.end = 0

    def default(self, obj: object) -> object:
        # With strict_types, msgpack hands us every type that is not exactly one of its own,
        # so numpy's float64 and str_ (subclasses of float and str) keep their type.
        if isinstance(obj, np.ndarray):
            return self._array(obj, _EXT_ARRAY, obj)
        if isinstance(obj, np.generic):
            return self._array(np.asarray(obj), _EXT_SCALAR, obj)
        if isinstance(obj, int):  # an int beyond 64 bits, or a subclass such as IntEnum
            return _pack_int(int.__int__(obj), obj)
        # Other subclasses of the JSON types travel as those types; the slot methods copy
        # their content without calling anything the subclass overrides.
        if isinstance(obj, float):
            return float.__float__(obj)
        if isinstance(obj, str):
            return str.__str__(obj)
        if isinstance(obj, bytes):
            return bytes(memoryview(obj))
        if isinstance(obj, (list, tuple)):
            return list(obj)
        if isinstance(obj, dict):
            return dict(obj)
        raise _Reject(obj, _a(obj))

    def _array(self, arr: np.ndarray[Any, Any], code: int, origin: object) -> object:
        descr = _describe(arr, origin)
        shape = arr.shape
        if not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        offset = _align(self.end)
        self.buffers.append((offset, arr.reshape(-1).view(np.uint8).data))
        self.end = offset + arr.nbytes
        payload = msgpack.packb([descr, shape, offset, arr.nbytes], use_bin_type=True)
        if len(payload) > MAX_ARRAY_HEADER:
            raise _Reject(origin, "an array whose dtype description takes over 64 KiB")
        return _ExtType(code, payload)

    def join(self, tree: bytes) -> bytes:
        header = _HEADER.pack(len(tree))
        if not self.buffers:
            return header + tree
        head = _HEADER.size + len(tree)
        start = _align(head)
        chunks: list[bytes | memoryview] = [header, tree, _PADDING[: start - head]]
        position = 0
        for offset, buffer in self.buffers:
            chunks += (_PADDING[: offset - position], buffer)
            position = offset + len(buffer)
        return b"".join(chunks)


def _pack_int(value: int, origin: object) -> object:
    if _INT_MIN <= value <= _UINT_MAX:
        return value
    return _ExtType(_EXT_INT, _int_text(value, origin).encode("ascii"))


def _int_text(value: int, origin: object) -> str:
    if value.bit_length() <= _MAX_INT_BITS:
        try:
            text = str(value)
        except ValueError:  # the interpreter's limit is set lower than ours
            pass
        else:
            if len(text) - (value < 0) <= MAX_INT_DIGITS:
                return text
    raise _Reject(origin, f"an int of more than {MAX_INT_DIGITS} digits")


def _byte_view(data: object) -> memoryview:
    if type(data) is bytes or type(data) is bytearray:
        return memoryview(data)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"cannot decode {_a(data)}: expected bytes, bytearray or memoryview")
    view = memoryview(data)
    if not view.c_contiguous:
        raise CodecError("cannot decode a memoryview that is not C-contiguous")
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _unpack(view: memoryview) -> object:
    if len(view) < _HEADER.size:
        raise CodecError(f"cannot decode {len(view)} bytes: shorter than the header")
    (tree_size,) = _HEADER.unpack_from(view)
    head = _HEADER.size + tree_size
    if head > len(view):
        raise CodecError(f"cannot decode: truncated ({len(view)} bytes, the tree ends at {head})")
    arrays = _Extensions(view, head)
    value = msgpack.unpackb(
        view[_HEADER.size : head], ext_hook=arrays.ext_hook, raw=False, strict_map_key=True
    )
    if arrays.end != len(view):
        raise CodecError(f"cannot decode: {len(view)} bytes where the value ends at {arrays.end}")
    return value


class _Extensions(_Arrays):
    """The unpacker's ext hook for one decode: arrays (views of the data), scalars, big ints."""

    __slots__ = ()

    def ext_hook(self, code: int, payload: bytes) -> object:
        if code == _EXT_ARRAY:
            return self.array(payload)
        if code == _EXT_SCALAR:
            return _scalar(self.array(payload))
        if code == _EXT_INT:
            if _INT_TEXT.fullmatch(payload) is None:
                raise CodecError("cannot decode a big int: malformed decimal text")
            return int(payload)
        raise CodecError(f"cannot decode extension type {code}")


# --- where: the error path only ----------------------------------------------------------


def _where(root: object, target: object, depth: int, where: Callable[[_Path], str]) -> str:
    path = _locate(root, target, depth)
    return where([]) + " (somewhere inside)" if path is None else where(path)


def _locate(value: object, target: object, depth: int) -> _Path | None:
    """The path to ``target`` (by identity), depth first, as the checks and msgpack go."""
    if value is target:
        return []
    if depth > MAX_DEPTH or type(value) is _ExtType:
        return None
    if isinstance(value, dict):
        for key, child in value.items():
            if key is target:  # a key that is itself the trouble: say which entry
                return [key]
            found = _locate(child, target, depth + 1)
            if found is not None:
                return [key, *found]
    elif isinstance(value, (list, tuple)):
        for index, child in enumerate(value):
            found = _locate(child, target, depth + 1)
            if found is not None:
                return [index, *found]
    return None


def _format_path(root: str, path: _Path) -> str:
    steps = "".join(
        f"[{_short(json.dumps(step) if isinstance(step, str) else repr(step))}]"
        for step in path[:_SHOWN_STEPS]
    )
    more = f"...({len(path)} steps)" if len(path) > _SHOWN_STEPS else ""
    return root + steps + more


def _value_path(path: _Path) -> str:
    return _format_path("value", path)


def _call_path(path: _Path) -> str:
    if not path:
        return "the call"
    if path[0] in (0, 1):
        return _format_path("kwargs" if path[0] else "args", path[1:])
    return _format_path("call", path)
