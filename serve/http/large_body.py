"""Large JSON request bodies: parsed so that limits are checked before the data become Python objects.

pydantic (and orjson) build a Python object for every number in `data`: about 110 ms per million values on
an AMD EPYC, with the replica's event loop held all along (none of these parsers releases the GIL, so a
thread would not help). simdjson parses the whole document in about 3 ns a byte and leaves each `data`
array on its tape: the envelope is validated and the declared shapes checked first, then a flat numeric
array becomes numpy in one C copy. A refused 27 MB body then costs the loop about 80 ms instead of a second.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import simdjson

LARGE_BODY_BYTES = 64 << 10  # below this, the plain pydantic parse is as fast and its errors are the reference
_BUFFER_TYPES = {"f": ("d", np.float64), "i": ("i", np.int64), "u": ("u", np.uint64)}


class JSONError(ValueError):
    """The body is not valid JSON."""


def parse_envelope(body: bytes) -> tuple[Any, list[Any]]:
    """The request as plain Python objects with each input's `data` left out, and the `data` arrays.

    Returns (envelope, lazy_data) where lazy_data[i] is input i's `data` as a simdjson Array, or None
    when the envelope already holds it (absent, or not an array: pydantic then says what was expected).
    """
    try:
        document = simdjson.Parser().parse(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise JSONError(str(error)) from None
    except RuntimeError as error:  # simdjson's DEPTH_ERROR and its other structural errors
        depth = "DEPTH_ERROR" in str(error)
        raise JSONError(f"nested deeper than the parser's recursion limit: {error}" if depth else str(error)) from None
    if not isinstance(document, simdjson.Object) or "inputs" not in document:
        return _plain(document), []
    inputs = document["inputs"]
    if not isinstance(inputs, simdjson.Array):
        return _plain(document), []
    envelope = {key: _plain(document[key]) for key in document.keys() if key != "inputs"}
    entries, lazy = [], []
    for index in range(len(inputs)):
        entry = inputs[index]
        data = entry["data"] if isinstance(entry, simdjson.Object) and "data" in entry else None
        if isinstance(data, simdjson.Array):
            entries.append({key: _plain(entry[key]) for key in entry.keys() if key != "data"})
            lazy.append(data)
        else:
            entries.append(_plain(entry))
            lazy.append(None)
    envelope["inputs"] = entries
    return envelope, lazy


def is_lazy(data: Any) -> bool:
    return isinstance(data, simdjson.Array)


def lazy_values(data: simdjson.Array, target: np.dtype) -> np.ndarray:
    """A lazy `data` array as numpy: flat numbers of the target's kind in one copy, anything else (nested
    lists, booleans, strings, floats for an integer type) through Python lists, checked as a small body is."""
    buffer_type = _BUFFER_TYPES.get(target.kind)
    if buffer_type is not None and (len(data) == 0 or not isinstance(data[0], simdjson.Array)):
        of_type, dtype = buffer_type
        try:
            return np.frombuffer(data.as_buffer(of_type=of_type), dtype=dtype)
        except (TypeError, ValueError):  # another kind of value somewhere: the general path says which
            pass
    return np.asarray(data.as_list())


def lazy_list(data: simdjson.Array) -> list[Any]:
    return data.as_list()


def _plain(value: Any) -> Any:
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value
