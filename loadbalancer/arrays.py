"""Numpy arrays as the codec carries them: dtype descriptions, shapes, contents, buffers.

An array travels as its dtype description, its shape and its bytes. The description is
what ``numpy.lib.format`` makes of the dtype, its tuples as lists (what msgpack and JSON
carry): :func:`_describe` makes it, refusing arrays that are not plain ndarrays, dtypes
that hold Python objects and dtypes that their description loses; :func:`_dtype_from_descr`
reads one back, checking its structure before numpy parses it, and refuses object, sub-array
and zero-size dtypes. A shape is at most :data:`MAX_NDIM` non-negative ints, and decoded
contents are checked (:func:`_check_contents`): bools are 0 or 1, str code points valid.

In :mod:`loadbalancer.codec`'s bytes, each array's buffer lies out of band, at the next
multiple of :data:`ALIGNMENT`; :class:`_Arrays` reads them for one decode as views of the
data, checking every header, offset and length first. :mod:`loadbalancer.jsonform` carries
the same description, shape and bytes (in base64) in its ``$array`` tag.
"""

from __future__ import annotations

import math
import reprlib
import warnings
from typing import Any, Final, cast

import msgpack
import numpy as np
from numpy.lib import format as npy_format

from loadbalancer.codecerror import CodecError, _a, _one_line, _Reject

MAX_NDIM: Final = 32  # numpy 1's limit (numpy 2 allows 64)
MAX_ARRAY_HEADER: Final = 64 * 1024  # an array's extension payload, dtype description and all
ALIGNMENT: Final = 16

_MAX_DTYPE_NESTING: Final = 32
_ARRAY_TYPES: Final = (np.memmap, np.recarray)  # subclasses that are just dtype, shape, bytes


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


def _align(offset: int) -> int:
    return -(-offset // ALIGNMENT) * ALIGNMENT


class _Arrays:
    """The buffer area of one decode: arrays become views of the data, in their order."""

    __slots__ = ("cursor", "data", "end", "start")

    def __init__(self, data: memoryview, head: int) -> None:
        self.data = data
        self.start = _align(head)  # the buffer area
        self.cursor = 0  # where in the buffer area the next buffer must start
        self.end = head  # where the encoded value ends so far

    def array(self, payload: bytes) -> np.ndarray[Any, Any]:
        """The array whose extension payload is ``payload``: the next buffer, as a view."""
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
        # A warning too means "no dtype": an alias numpy deprecates ('a' for 'S') is
        # refused now rather than warned about in a node's log and refused by a later numpy.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
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
