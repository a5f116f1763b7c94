"""JSON on the hot paths (native frames, HTTP bodies, log commands), by msgspec: 5-10x faster
than the standard ``json`` and exact for integers of any size.

``decode`` is strict JSON (no NaN or Infinity) and raises ValueError.  ``encode`` is for data
already known to be JSON-safe (decoded from JSON, or checked by the strict standard-library
encoders that write commands and requests): msgspec would write NaN as null.
"""
from __future__ import annotations

from typing import Any

import msgspec

_decoder = msgspec.json.Decoder()
encode = msgspec.json.Encoder().encode


def decode(data: bytes | bytearray | str) -> Any:
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
