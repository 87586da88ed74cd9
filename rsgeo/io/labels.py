"""Mask values -> class ids (``--label-map FROM:TO``), before nodata and ignore rules apply.

Chips and metrics use 255 as "ignore", so a 0/255 building mask would lose its buildings;
``--label-map 0:0,255:1`` recodes it first. Values not named in the map are kept as they
are. A value the map names is a class even when the file declares it as nodata (the map
is the user's explicit word).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rsgeo.errors import InputError

IGNORE = 255
#: the values a change mask may hold (after ``--label-map``): no change, change, ignore
CHANGE_VALUES = (0, 1, IGNORE)
#: pixels per strip of :func:`check_label_raster` (a 40 000 px wide raster: ~100 rows)
LABEL_STRIP_PIXELS = 1 << 22


def parse_label_map(items) -> dict[int, int] | None:
    """``["0:0,255:1", "7:2"]`` (repeatable, comma lists) -> ``{0: 0, 255: 1, 7: 2}``.

    A dict is returned as a checked copy; None or empty gives None. Targets are class ids
    in 0..254 (255 is ignore); a source value given twice with different targets is an error.
    """
    if not items:
        return None
    pairs: list[tuple[int, int]] = []
    if isinstance(items, dict):
        pairs = [(int(k), int(v)) for k, v in items.items()]
    else:
        for item in [items] if isinstance(items, str) else items:
            for pair in str(item).split(","):
                a, sep, b = pair.partition(":")
                try:
                    if not sep:
                        raise ValueError
                    pairs.append((int(a), int(b)))
                except ValueError:
                    raise InputError(f"--label-map takes FROM:TO integer pairs, e.g. 255:1; "
                                     f"got {pair!r}") from None
    out: dict[int, int] = {}
    for a, b in pairs:
        if not 0 <= b < IGNORE:
            raise InputError(f"--label-map {a}:{b}: class ids must be in 0..254 "
                             "(255 means ignore)")
        if out.get(a, b) != b:
            raise InputError(f"--label-map maps {a} to both {out[a]} and {b}")
        out[a] = b
    return out


def recode(a: np.ndarray, mapping: dict[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """``(recoded, named)``: ``a`` with mapped values replaced (same shape and dtype) and
    a bool mask of the pixels the map named."""
    if not mapping:
        return a, np.zeros(a.shape, bool)
    named = np.zeros(a.shape, bool)
    out = a.copy()
    for src, dst in mapping.items():
        hit = a == src
        out[hit] = dst
        named |= hit
    return out, named


def classes_and_values(obj: dict, path=None) -> tuple[dict[int, str], dict[int, int] | None]:
    """A classes file's JSON object -> ``({id: name}, label map or None)``.

    Entries are ``"id": "name"`` or ``"id": {"name": ..., "values": [mask values]}``; the
    values become the label map (e.g. ``{"1": {"name": "building", "values": [255]}}`` reads
    a 0/255 mask's 255 as class 1).
    """
    names: dict[int, str] = {}
    lmap: dict[int, int] = {}
    try:
        for k, v in obj.items():
            cid = int(k)
            if isinstance(v, dict):
                names[cid] = str(v.get("name", k))
                lmap.update({int(x): cid for x in v.get("values", [])})
            else:
                names[cid] = str(v)
    except (TypeError, ValueError, AttributeError):
        raise InputError('classes must map integer ids to names or {"name": ..., "values": '
                         "[...]}", path) from None
    return names, (parse_label_map(lmap) if lmap else None)


def _class_lines(text: str) -> dict[int, str]:
    """``id,name`` lines (``#`` comments; a bare id names itself) -> ``{id: name}``."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            k, _, v = line.partition(",")
            out[int(k)] = v.strip() or k.strip()
    return out


def read_classes(path, label_map=None) -> tuple[dict[int, str] | None, dict[int, int] | None]:
    """A classes file (or None) and ``--label-map`` texts -> ``(names, label map)``.

    The file (``--classes`` of prepare and evaluate) is a JSON object (``{"1": "roof"}`` or
    ``{"1": {"name": "roof", "values": [255]}}``, see :func:`classes_and_values`) or text/CSV
    ``id,name`` lines. ``--label-map`` entries win over the file's ``values``.
    """
    user = parse_label_map(label_map)
    if path is None:
        return None, user
    p = Path(path)
    if not p.is_file():
        raise InputError("no such classes file", p)
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json" or text.lstrip().startswith("{"):
            obj = json.loads(text)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
            names, from_file = classes_and_values(obj, p)
        else:
            names, from_file = _class_lines(text), None
    except ValueError:
        raise InputError("classes file must map integer ids to names (JSON {id: name} or "
                         "id,name lines)", p) from None
    merged = {**(from_file or {}), **(user or {})}
    return names, (merged or None)


def stray_values(v: np.ndarray, allowed) -> np.ndarray:
    """The distinct values of ``v`` not in ``allowed`` (sorted)."""
    return np.unique(v[~np.isin(v, np.asarray(allowed))])


def _listed(values: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(f"{x:g}" for x in values[:limit].tolist())
    return shown + (f" and {values.size - limit} more" if values.size > limit else "")


def class_ids(a: np.ndarray, keep: np.ndarray, path, key: str = "labels") -> np.ndarray:
    """uint8 class ids of a label (``key="labels"``) or change mask (``key="change"``):
    ``a`` (recoded) where ``keep``, 255 (ignore) elsewhere.

    Raises ``InputError`` naming ``path`` for what a cast would silently turn into classes:
    values that are not whole numbers (a probability or height raster, not labels; they
    became class 0 or truncated heights), values outside 0..255 (they wrapped around), and
    in a change mask anything but 0/1/255 (docs/chip-dataset.md).
    """
    v = a[keep]
    if v.dtype.kind == "f":
        frac = np.unique(v[v != np.floor(v)])
        if frac.size:
            raise InputError(f"{key} raster holds values that are not whole numbers "
                             f"({_listed(frac)}): class ids are integers (a probability or "
                             "height raster is not labels)", path)
    if key == "change":
        bad = stray_values(v, CHANGE_VALUES)
        if bad.size:
            raise InputError(f"change mask holds the value(s) {_listed(bad)}: change is 0 (none) "
                             "or 1 (change), 255 ignore; recode with --label-map (e.g. "
                             f"--label-map {bad[0].item():g}:1)", path)
    elif v.dtype != np.uint8:
        bad = np.unique(v[(v < 0) | (v > IGNORE)])
        if bad.size:
            raise InputError(f"label values {_listed(bad)} are not class ids in 0..255 "
                             "(255 = ignore); recode with --label-map or set the nodata", path)
    return np.where(keep, a, IGNORE).astype(np.uint8)


def _distinct(v: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a 1-D array; a histogram for small integer types (one
    pass, no sort: what label rasters mostly are)."""
    if v.size and v.dtype.kind in "iu" and v.dtype.itemsize <= 2:
        lo = int(v.min())
        counts = np.bincount((v.astype(np.int32) - lo).ravel())
        return (np.flatnonzero(counts) + lo).astype(v.dtype)
    return np.unique(v)


def check_label_raster(ds, path, key: str = "labels", label_map=None,
                       classes=None, keep: bool = False) -> np.ndarray | None:
    """Refuse a label (``key="labels"``) or change mask (``key="change"``) raster whose
    valid pixels, recoded by ``label_map``, are not class ids -- the checks of
    :func:`class_ids` -- or (``classes``: the ``--classes`` ids) not in the class list.

    Streams band 1 of ``ds`` (a file, or a WarpedVRT onto the chip grid) in full-width
    strips of about :data:`LABEL_STRIP_PIXELS` pixels, memory bounded whatever its size,
    and names every stray value in one line. Stops early once more than 256 distinct
    values turned up (then some are not class ids 0..255).

    ``keep``: also return what the check read as chips store it, so that they need not
    read the raster again: ``(height, width)`` uint8 class ids, recoded, 255 (ignore)
    where not valid (``ds.height * ds.width`` bytes); else None.
    """
    # lazy: rasterio; prepare's CLI module imports this module for `rsgeo --help`
    from rsgeo.io.raster import valid_mask
    from rsgeo.io.reader import block_shape, read_strips

    rows = max(1, LABEL_STRIP_PIXELS // max(1, ds.width))
    bh = block_shape(ds)[0]
    rows = rows // bh * bh if rows > bh else rows
    seen = None
    ids = np.empty((ds.height, ds.width), np.uint8) if keep else None
    for win, (a,) in read_strips([ds], rows):
        raw, named = recode(a, label_map)
        ok = valid_mask(a, ds.nodata) | named
        vals = _distinct(raw[ok])
        seen = vals if seen is None else np.union1d(seen, vals)
        if seen.size > IGNORE + 1:
            break
        if ids is not None:   # the cast is checked below (a stray value refuses the raster)
            r = int(win.row_off)
            with np.errstate(invalid="ignore", over="ignore"):
                ids[r:r + a.shape[0]] = np.where(ok, raw, IGNORE).astype(np.uint8)
    if seen is None or not seen.size:
        return ids
    class_ids(seen, np.ones(seen.shape, bool), path, key)
    if key == "labels" and classes is not None:
        bad = stray_values(seen, [*classes, IGNORE])
        if bad.size:
            raise InputError(f"label values {_listed(bad)} are not in the --classes list "
                             f"({_listed(np.asarray(sorted(classes)), 12)}); add them or "
                             "recode with --label-map", path)
    return ids
