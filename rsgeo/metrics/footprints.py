"""Building-footprint F1, reproducing the SpaceNet building scorer (CosmiQ/solaris).

Rules (as ``eval_iou_spacenet_csv``):

- reference polygons with area < ``min_area`` are dropped, and those of area 0 (empty or
  degenerate: never matched, and not counted as FN); predictions with area <= ``min_area``
  are dropped too, their area taken as given (SpaceNet: 20 px² on pixel coordinates);
- predictions are visited in descending order of ``confidence`` when given (stable for
  ties), else in file order; an invalid prediction is repaired with ``buffer(0)`` (after
  the area test: a self-crossing "bowtie" of signed area 0 is dropped, as by solaris);
- each visited prediction is paired with the *remaining* reference polygon of highest
  IoU (the first in file order on ties); it is a match only if that IoU > ``iou``
  (strict), and the reference is then removed; an invalid reference polygon (or a
  prediction still invalid after repair) has IoU 0, so it is never matched: the
  reference counts as FN (solaris' ``calculate_iou``); TP = matches, FP = other
  predictions, FN = references left;
- precision, recall and F1 are 0 when undefined.

Candidates come from an STRtree query (only intersecting references are scored).
"""

from __future__ import annotations

import numpy as np

from rsgeo.metrics.counts import precision_recall_f1


def _prf(tp: int, fp: int, fn: int) -> dict:
    p, r, f1 = precision_recall_f1(tp, fp, fn)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r, "f1": f1}


def match(pred_geoms, ref_geoms, iou: float = 0.5, min_area: float = 0.0,
          confidence=None) -> dict:
    """Score one image: arrays of shapely geometries (same CRS). Returns tp/fp/fn/precision/recall/f1."""
    import shapely

    pred = np.asarray(pred_geoms, dtype=object)
    ref = np.asarray(ref_geoms, dtype=object)
    if len(ref):
        ref = ref[~shapely.is_empty(ref)]
        area = shapely.area(ref)
        ref = ref[(area > 0) & (area >= min_area)]
    if len(pred):
        keep = ~shapely.is_empty(pred)
        conf = None if confidence is None else np.asarray(confidence, float)[keep]
        pred = pred[keep]
        big = shapely.area(pred) > min_area
        pred = pred[big]
        bad = ~shapely.is_valid(pred)
        if bad.any():
            pred[bad] = shapely.buffer(pred[bad], 0)
        if conf is not None:
            conf = conf[big]
            pred = pred[np.argsort(-conf, kind="stable")]
    tree = shapely.STRtree(ref) if len(ref) else None
    free = shapely.is_valid(ref)      # an invalid reference is never matched (IoU 0)
    unmatched = np.ones(len(ref), bool)
    tp = 0
    for g in pred:
        if tree is None:
            break
        if not shapely.is_valid(g):  # still invalid after buffer(0): IoU 0
            continue
        cand = np.sort(tree.query(g))  # file order: the first of equal IoUs wins
        cand = cand[free[cand]]
        if not len(cand):
            continue
        inter = shapely.area(shapely.intersection(ref[cand], g))
        union = shapely.area(shapely.union(ref[cand], g))
        ious = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        best = int(np.argmax(ious))
        if ious[best] > iou:
            free[cand[best]] = unmatched[cand[best]] = False
            tp += 1
    return _prf(tp, len(pred) - tp, int(unmatched.sum()))


def score_footprints(pred_gdf, ref_gdf, iou: float = 0.5, min_area: float = 0.0,
                     confidence: str | None = None, by: str | None = None) -> dict:
    """Footprint F1 of two GeoDataFrames (same CRS), optionally per value of ``by``.

    Returns the pooled ``tp, fp, fn, precision, recall, f1`` and, with ``by``, a list of
    per-group rows under ``"groups"`` (matching happens only within a group).
    """
    if by is None:
        conf = pred_gdf[confidence].to_numpy() if confidence else None
        return match(pred_gdf.geometry.to_numpy(), ref_gdf.geometry.to_numpy(), iou, min_area, conf)
    keys = sorted(set(pred_gdf[by].astype(str)) | set(ref_gdf[by].astype(str)))
    rows, tp = [], np.zeros(3, int)
    for k in keys:
        p = pred_gdf[pred_gdf[by].astype(str) == k]
        r = ref_gdf[ref_gdf[by].astype(str) == k]
        conf = p[confidence].to_numpy() if confidence else None
        m = match(p.geometry.to_numpy(), r.geometry.to_numpy(), iou, min_area, conf)
        rows.append({by: k, **m})
        tp += (m["tp"], m["fp"], m["fn"])
    return {**_prf(*map(int, tp)), "groups": rows}


def read_spacenet_csv(path):
    """A SpaceNet CSV (ImageId, BuildingId, PolygonWKT_Pix[, Confidence]) as a GeoDataFrame
    in pixel coordinates (no CRS); ``POLYGON EMPTY`` rows keep their image with no polygon."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    df = pd.read_csv(path)
    values = df["PolygonWKT_Pix"].to_numpy()
    empty = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
    if empty is not None:  # pandas reads an empty cell as NaN, which shapely cannot parse
        raise ValueError(f"line {empty + 2}: PolygonWKT_Pix is empty (an image without "
                         "buildings is written POLYGON EMPTY)")
    try:
        geoms = shapely.from_wkt(values)
    except shapely.errors.GEOSException:  # name the first line that is not WKT
        parsed = shapely.from_wkt(values, on_invalid="ignore")
        bad = next(i for i, (v, g) in enumerate(zip(values, parsed)) if g is None and
                   isinstance(v, str))
        raise ValueError(f"line {bad + 2}: PolygonWKT_Pix is not WKT ({values[bad][:60]!r})") \
            from None
    geoms = shapely.force_2d(geoms)
    out = gpd.GeoDataFrame(df.drop(columns=[c for c in ("PolygonWKT_Pix", "PolygonWKT_Geo")
                                            if c in df]), geometry=geoms)
    out["ImageId"] = out["ImageId"].astype(str)
    return out
