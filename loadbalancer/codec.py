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

:func:`to_json` and :func:`from_json` give the same values a JSON form for the input and
output files people read and write, with one-key tag objects for what JSON lacks:
``{"$bytes": base64}``, ``{"$array": {"dtype", "shape", "data"}}``, ``{"$float": "nan"}``,
and ``{"$dict": {...}}`` for a dict that would otherwise look like a tag.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
import reprlib
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, cast

import msgpack
import numpy as np
from numpy.lib import format as npy_format

MAX_DEPTH: Final = 100  # containers inside containers, the outermost counting as 1
MAX_INT_DIGITS: Final = 4300
MAX_NDIM: Final = 32  # numpy 1's limit (numpy 2 allows 64)
MAX_ARRAY_HEADER: Final = 64 * 1024  # an array's extension payload, dtype description and all
ALIGNMENT: Final = 16

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
_MAX_DTYPE_NESTING: Final = 32
_PADDING: Final = bytes(ALIGNMENT - 1)
_TAGS: Final = frozenset({"$bytes", "$array", "$float", "$dict"})
_FLOAT_NAMES: Final = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_CONTAINERS: Final = (list, tuple, dict)
_STR: Final = frozenset({str})
# Exact types that contain nothing and that msgpack packs or our hook checks: a container
# whose elements are all of these needs no walk. Subclasses (an OrderedDict, a namedtuple)
# are not here on purpose: they may be containers.
_LEAVES: Final = frozenset(
    {type(None), bool, int, float, str, bytes, bytearray, np.ndarray}
    | {np.bool_, np.int32, np.int64, np.float32, np.float64}
)
_ARRAY_TYPES: Final = (np.memmap, np.recarray)  # subclasses that are just dtype, shape, bytes
_SHOWN_STEPS: Final = 8
_ExtType: Final = msgpack.ExtType
_Timestamp: Final = msgpack.Timestamp

_Path = list[object]  # list indices and dict keys


class CodecError(ValueError):
    """A value that cannot be encoded, or bytes or JSON that do not decode to a value."""


class _Reject(Exception):
    """What is wrong (``what``) and with which object; its path is looked up only then."""

    def __init__(self, obj: object, what: str) -> None:
        super().__init__(what)
        self.obj = obj
        self.what = what


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


def _describe(arr: np.ndarray[Any, Any], origin: object) -> object:
    """The dtype description of ``arr`` as lists (what msgpack and JSON carry), if it can go."""
    if type(arr) is not np.ndarray and not isinstance(arr, _ARRAY_TYPES):
        raise _Reject(origin, f"{_a(arr)} (only plain ndarrays: pass np.asarray(x))")
    if arr.ndim > MAX_NDIM:
        raise _Reject(origin, f"an array of more than {MAX_NDIM} dimensions")
    dtype = arr.dtype
    if dtype.hasobject:
        raise _Reject(origin, f"an array of dtype {dtype}, which holds Python objects")
    try:
        descr = _listify(npy_format.dtype_to_descr(npy_format.drop_metadata(dtype)))
        same = _dtype_from_descr(descr) == dtype
    except (ValueError, TypeError) as exc:  # CodecError is a ValueError
        raise _Reject(origin, f"an array of dtype {dtype} ({_one_line(exc)})") from None
    if not same:
        raise _Reject(origin, f"an array of dtype {dtype}, which its description loses")
    return descr


def _listify(descr: object) -> object:
    if isinstance(descr, (list, tuple)):
        return [_listify(part) for part in descr]
    return descr


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


def _align(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT


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
    arrays = _Arrays(view, head)
    value = msgpack.unpackb(
        view[_HEADER.size : head], ext_hook=arrays.ext_hook, raw=False, strict_map_key=True
    )
    if arrays.end != len(view):
        raise CodecError(f"cannot decode: {len(view)} bytes where the value ends at {arrays.end}")
    return value


class _Arrays:
    """The unpacker's ext hook for one decode: arrays become views of the data."""

    __slots__ = ("cursor", "data", "end", "start")

    def __init__(self, data: memoryview, head: int) -> None:
        self.data = data
        self.start = _align(head)  # the buffer area
        self.cursor = 0  # where in the buffer area the next buffer must start
        self.end = head  # where the encoded value ends so far

    def ext_hook(self, code: int, payload: bytes) -> object:
        if code == _EXT_ARRAY:
            return self._array(payload)
        if code == _EXT_SCALAR:
            return _scalar(self._array(payload))
        if code == _EXT_INT:
            if _INT_TEXT.fullmatch(payload) is None:
                raise CodecError("cannot decode a big int: malformed decimal text")
            return int(payload)
        raise CodecError(f"cannot decode extension type {code}")

    def _array(self, payload: bytes) -> np.ndarray[Any, Any]:
        if len(payload) > MAX_ARRAY_HEADER:
            raise CodecError(f"cannot decode an array header of {len(payload)} bytes")
        header = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        if type(header) is not list or len(header) != 4:
            raise CodecError("cannot decode an array header: not [dtype, shape, offset, length]")
        descr, shape, offset, length = header
        dtype = _dtype_from_descr(descr)
        dims = _shape(shape)
        count = math.prod(dims)
        if type(length) is not int or count * dtype.itemsize != length:
            raise CodecError(f"cannot decode an array of {dims} {dtype} in {length!r} bytes")
        # Buffers follow one another in the order of the tree, each at the next aligned
        # offset: no overlaps, no holes, so one buffer is never two arrays.
        if type(offset) is not int or offset != self.cursor:
            raise CodecError(f"cannot decode an array at offset {offset!r}, not {self.cursor}")
        begin = self.start + offset
        if begin + length > len(self.data):
            raise CodecError(f"cannot decode: truncated (an array ends at {begin + length})")
        self.cursor = _align(offset + length)
        self.end = begin + length
        flat = np.frombuffer(self.data, dtype, count, begin)
        _check_contents(flat)
        return flat.reshape(dims)


def _scalar(arr: np.ndarray[Any, Any]) -> object:
    if arr.ndim:
        raise CodecError(f"cannot decode a numpy scalar of shape {arr.shape}")
    if arr.dtype.kind == "V":  # a record scalar is a view of its array: give it its own bytes
        arr = arr.copy()
    return arr[()]


def _check_contents(arr: np.ndarray[Any, Any]) -> None:
    """Refuse bools other than 0 and 1 and str code points past U+10FFFF, in records too.

    No array holds them; numpy would not fail on them here but later, in the user's
    function (printing such a str array raises SystemError).
    """
    if arr.dtype.names:
        for name in arr.dtype.names:
            _check_contents(arr[name])
        return
    kind = arr.dtype.kind
    if not arr.size or kind not in "bU":
        return
    flat = np.ascontiguousarray(arr).reshape(-1)  # copies only a record's field
    if kind == "b" and flat.view(np.uint8).max() > 1:
        raise CodecError("cannot decode a bool array holding bytes other than 0 and 1")
    if kind == "U":
        codes = flat.view(np.dtype(np.uint32).newbyteorder(arr.dtype.byteorder))
        if codes.max() > 0x10FFFF:
            raise CodecError("cannot decode a str array holding invalid code points")


def _dtype_from_descr(descr: object) -> np.dtype[Any]:
    """The dtype that a description (str, or a list of fields, as carried) stands for."""
    fields = _descr_fields(descr, 0)
    try:
        dtype = npy_format.descr_to_dtype(cast(Any, fields))
    except Exception as exc:  # numpy parsing hostile text: whatever it raises means "no dtype"
        raise CodecError(f"not a dtype description ({_one_line(exc)})") from None
    if dtype.hasobject:
        raise CodecError(f"dtype {dtype} holds Python objects")
    if dtype.subdtype is not None:  # frombuffer would add its dimensions to the shape
        raise CodecError(f"dtype {dtype} is a sub-array")
    if dtype.itemsize == 0:  # any shape would fit in no bytes at all
        raise CodecError(f"dtype {dtype} has zero-size items")
    return dtype


def _descr_fields(descr: object, nesting: int) -> object:
    """Check a description's structure; rebuild the tuples that msgpack and JSON make lists."""
    if type(descr) is str:
        return descr
    if type(descr) is not list or nesting > _MAX_DTYPE_NESTING:
        raise CodecError("not a dtype description (a str or a list of fields)")
    return [_descr_field(field, nesting) for field in descr]


def _descr_field(field: object, nesting: int) -> tuple[object, ...]:
    if type(field) is not list or len(field) not in (2, 3):
        raise CodecError("not a dtype field ([name, dtype] or [name, dtype, shape])")
    name = field[0]
    if type(name) is list and len(name) == 2 and all(type(part) is str for part in name):
        name = tuple(name)  # (title, name)
    elif type(name) is not str:
        raise CodecError(f"not a dtype field name: {reprlib.repr(name)}")
    subtype = _descr_fields(field[1], nesting + 1)
    return (name, subtype) if len(field) == 2 else (name, subtype, _shape(field[2]))


def _shape(shape: object) -> tuple[int, ...]:
    if (
        type(shape) is not list
        or len(shape) > MAX_NDIM
        or not all(type(dim) is int and dim >= 0 for dim in shape)
    ):
        raise CodecError(f"not a shape (at most {MAX_NDIM} non-negative ints): {shape!r:.80}")
    return tuple(shape)


# --- JSON --------------------------------------------------------------------------------


def to_json(value: object) -> object:
    """``value`` in JSON-native types only, for ``json.dumps(..., allow_nan=False)``."""
    try:
        return _to_json(value, 1)
    except _Reject as exc:
        place = _where(value, exc.obj, 1, _value_path)
        raise CodecError(f"cannot convert {exc.what} to JSON at {place}") from None


def from_json(value: object) -> object:
    """The value that :func:`to_json` gave ``value`` for; arrays are writable copies."""
    return _from_json_at(value, "value")


def parse_call(line: str) -> tuple[list[object], dict[str, object]]:
    """A line of a JSON-lines input file as ``(args, kwargs)``.

    An array gives the positional arguments, an object (not a tag) the keyword arguments,
    and any other value, a tagged one included, is the only positional argument.
    """
    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise CodecError(f"bad JSON: {_one_line(exc)}") from None
    if type(value) is list:
        return cast("list[object]", _from_json_at(value, "args")), {}
    if type(value) is dict and _tag(value) is None:
        return [], cast("dict[str, object]", _from_json_at(value, "kwargs"))
    return [_from_json_at(value, "args[0]")], {}


def _from_json_at(value: object, root: str) -> object:
    try:
        return _from_json(value, 1)
    except _Reject as exc:
        place = _where(value, exc.obj, 1, functools.partial(_format_path, root))
        raise CodecError(f"cannot read {exc.what} from JSON at {place}") from None


def _to_json(value: object, depth: int) -> object:
    if value is None or type(value) is bool or type(value) is str:
        return value
    if isinstance(value, np.generic):  # first: float64 is a float, str_ a str
        return _scalar_to_json(value)
    if isinstance(value, int):
        number = int.__int__(value)
        if not _INT_MIN <= number <= _UINT_MAX:
            _int_text(number, value)
        return number
    if isinstance(value, float):
        if math.isfinite(value):
            return float.__float__(value)
        return {"$float": "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"}
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        if type(value) is memoryview:
            _check_memoryview(value)
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.ndarray):
        return _array_to_json(value, value)
    if isinstance(value, _CONTAINERS) and type(value) is not _ExtType:
        if depth > MAX_DEPTH:
            raise _Reject(value, f"{_a(value)} nested more than {MAX_DEPTH} deep")
        if not isinstance(value, dict):
            return [_to_json(item, depth + 1) for item in value]
        _check_keys(value)
        result = {str.__str__(key): _to_json(item, depth + 1) for key, item in value.items()}
        return {"$dict": result} if _tag(result) is not None else result
    raise _Reject(value, _a(value))


def _scalar_to_json(value: np.generic) -> object:
    # Numbers that JSON holds exactly read as numbers; a float wider than float64, a
    # non-finite float, a datetime, a record... keep their dtype in the array form.
    kind, size = value.dtype.kind, value.dtype.itemsize
    if kind in "biu" or (kind == "f" and size <= 8 and math.isfinite(value)):
        return value.item()
    return _array_to_json(np.asarray(value), value)


def _array_to_json(arr: np.ndarray[Any, Any], origin: object) -> object:
    descr = _describe(arr, origin)
    data = base64.b64encode(arr.tobytes()).decode("ascii")
    return {"$array": {"dtype": descr, "shape": list(arr.shape), "data": data}}


def _tag(value: dict[Any, object]) -> str | None:
    if len(value) == 1:
        (key,) = value
        if key in _TAGS:
            return str(key)
    return None


def _from_json(value: object, depth: int) -> object:
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is list:
        if depth > MAX_DEPTH:
            raise _Reject(value, f"a list nested more than {MAX_DEPTH} deep")
        return [_from_json(item, depth + 1) for item in value]
    if type(value) is dict:
        tag = _tag(value)
        if tag in (None, "$dict") and depth > MAX_DEPTH:  # the other tags stand for leaves
            raise _Reject(value, f"a dict nested more than {MAX_DEPTH} deep")
        if tag is None:
            return _from_plain_dict(value, depth)
        try:
            return _from_tag(tag, value[tag], depth)
        except CodecError as exc:
            raise _Reject(value, f"a bad {tag} ({exc})") from None
    raise _Reject(value, f"{_a(value)}, which is not a JSON type")


def _from_plain_dict(value: dict[Any, object], depth: int) -> dict[str, object]:
    _check_keys(value)
    return {key: _from_json(item, depth + 1) for key, item in value.items()}


def _from_tag(tag: str, body: object, depth: int) -> object:
    if tag == "$dict":
        if type(body) is not dict:
            raise CodecError("not an object")
        return _from_plain_dict(body, depth)  # the wrapper is no level of its own
    if tag == "$float":
        if type(body) is not str or body not in _FLOAT_NAMES:
            raise CodecError('not "nan", "inf" or "-inf"')
        return _FLOAT_NAMES[body]
    if tag == "$bytes":
        return _base64(body)
    return _array_from_json(body)


def _array_from_json(body: object) -> np.ndarray[Any, Any]:
    if type(body) is not dict or body.keys() != {"dtype", "shape", "data"}:
        raise CodecError('not an object of "dtype", "shape" and "data"')
    dtype = _dtype_from_descr(body["dtype"])
    dims = _shape(body["shape"])
    data = _base64(body["data"])
    count = math.prod(dims)
    if count * dtype.itemsize != len(data):
        raise CodecError(f"{len(data)} bytes of data for {dims} {dtype}")
    flat = np.frombuffer(bytearray(data), dtype, count)
    _check_contents(flat)
    return flat.reshape(dims)


def _base64(text: object) -> bytes:
    if type(text) is not str:
        raise CodecError("base64 data must be a string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CodecError(f"bad base64: {exc}") from None


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


def _a(obj: object) -> str:
    name = type(obj).__name__
    return f"{'an' if name[0] in 'aeiouAEIOU' else 'a'} {name}"


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return _short(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, 200)
