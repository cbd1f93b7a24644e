"""The tagged JSON form of the codec's values, for the JSON-lines files people read and write.

:func:`to_json` and :func:`from_json` give the values that :mod:`loadbalancer.codec`
carries a JSON form, with one-key tag objects for what JSON lacks: ``{"$bytes": base64}``,
``{"$array": {"dtype", "shape", "data"}}``, ``{"$float": "nan"}``, and ``{"$dict": {...}}``
for a dict that would otherwise look like a tag. A numpy scalar becomes a plain number
where JSON holds it exactly, a 0-d array otherwise. :func:`parse_call` reads a line of a
JSON-lines input file as a call's arguments.

:func:`to_json` makes the checks of :func:`~loadbalancer.codec.encode`'s walk (nesting
past :data:`~loadbalancer.codec.MAX_DEPTH`, dict keys, int sizes) and describes arrays as
it does; :func:`from_json` bounds nesting, checks dict keys and each tag's body, arrays
as decoding does (:mod:`loadbalancer.arrays`). Both raise
:class:`~loadbalancer.codec.CodecError`, saying where in the value the trouble is.
"""

from __future__ import annotations

import binascii
import functools
import json
import math
from typing import Any, Final, cast

import numpy as np
import pybase64

from loadbalancer.arrays import _check_contents, _describe, _dtype_from_descr, _shape
from loadbalancer.codec import (
    _INT_MIN,
    _UINT_MAX,
    MAX_DEPTH,
    _check_keys,
    _check_memoryview,
    _ExtType,
    _format_path,
    _int_text,
    _value_path,
    _where,
)
from loadbalancer.codecerror import CodecError, _a, _one_line, _Reject

_TAGS: Final = frozenset({"$bytes", "$array", "$float", "$dict"})
_FLOAT_NAMES: Final = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_CONTAINERS: Final = (list, tuple, dict)


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
        return {"$bytes": pybase64.b64encode(value).decode("ascii")}
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
    data = pybase64.b64encode(arr.tobytes()).decode("ascii")
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
        # SIMD base64 (pybase64): the stdlib's validated decode took a quarter of a master's
        # time handing over a map of 1 MiB inputs, 3.3 ms a MiB against 0.1.
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CodecError(f"bad base64: {exc}") from None
