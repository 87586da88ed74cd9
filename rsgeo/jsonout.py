"""Strict JSON for every summary rsgeo prints or writes.

Python's ``json`` writes ``NaN`` and ``Infinity``, which strict parsers (``jq``, browsers,
most languages) reject. :func:`dumps` writes them as ``null`` and turns numpy scalars and
arrays, paths and tuples into their JSON equivalents.
"""

from __future__ import annotations

import json
import math
from pathlib import PurePath


def plain(obj):
    """``obj`` with NaN/inf -> None, numpy -> Python, paths -> str (recursively)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [plain(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, 0-d tensors
        return plain(obj.tolist())
    if hasattr(obj, "__float__"):
        return plain(float(obj))
    return str(obj)


def dumps(obj, **kw) -> str:
    """``json.dumps`` that never writes NaN/Infinity (see the module docstring)."""
    return json.dumps(plain(obj), allow_nan=False, **kw)
