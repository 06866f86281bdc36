"""Strict equality for decoded values, shared by the codec and vector tests."""

from __future__ import annotations

import math
from typing import Any

from ocapd.captp import RemoteError, Tagged


def same(a: Any, b: Any) -> bool:
    """Equality that also compares types (True is not 1), record order, NaN with NaN and the sign of zero."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if type(a) is Tagged:
        return a.tag == b.tag and same(a.payload, b.payload)
    if type(a) is RemoteError:
        return (a.name, a.message, a.remote_traceback) == (b.name, b.message, b.remote_traceback)
    return bool(a == b)
