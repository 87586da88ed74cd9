"""Buildings from imagery through a model: footprints, and the heights of given buildings.

:func:`model_buildings` runs ``rsgeo predict`` (:func:`rsgeo.infer.predict.predict_files`,
the one streaming pipeline) with ``--probabilities`` and picks the building class's band;
:func:`predicted_footprints` polygonises it with :func:`rsgeo.footprints.footprints`. Used
by ``rsgeo footprints IMAGE -m MODEL`` and ``rsgeo damage-map --buildings-model``.
:func:`predicted_building_heights` measures given buildings on the heights a height model
predicts (``rsgeo building-heights IMAGE -m MODEL``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rsgeo.errors import InputError
from rsgeo.footprints import footprints
from rsgeo.footprints.heights import building_heights
from rsgeo.infer.predict import predict_files, predict_height_file, start_loading
from rsgeo.infer.writers import class_names, num_classes, sibling
from rsgeo.io.atomic import check_output, parents_made
from rsgeo.io.buildings import require_overlap
from rsgeo.io.vector import driver_for


def building_class(names: list[str], given: int | None, model) -> int:
    """The index of the building class: ``given``, else the one class whose name contains
    "building"; InputError naming the model otherwise."""
    if given is not None:
        if not 0 <= int(given) < len(names):
            raise InputError(f"--class {given} is not a class of this model (0..{len(names) - 1}: "
                             + ", ".join(names) + ")", model)
        return int(given)
    found = [i for i, n in enumerate(names) if "building" in n.lower()]
    if len(found) != 1:
        raise InputError("names no single building class (classes: " + ", ".join(names)
                         + "); pass --class ID", model)
    return found[0]


def model_buildings(image, model, workdir, *, building: int | None = None,
                    backend: str | None = None, device: str = "auto",
                    precision: str = "fp32", **predict_kw) -> dict:
    """Predict ``image``'s class probabilities with the segmentation ``model`` into
    ``workdir``; returns ``{"probabilities": path, "band": building band (1-based),
    "class": its name, "model": model, "predict": the per-file summary}``.

    A model of another task is an InputError naming the model and its task.
    """
    loading = start_loading(model, backend, device, precision)
    meta, config = loading.meta()
    task = meta.get("task", config.get("task"))
    if task != "segmentation":
        raise InputError(f"holds a {task} model, not a segmentation model (buildings need a "
                         "model from `rsgeo finetune --task segmentation`)", model)
    names = class_names(meta, num_classes(meta, config, model))
    k = building_class(names, building, model)
    out = Path(workdir) / f"{Path(image).stem}_classes.tif"
    r = predict_files([image], model, [out], expect="segmentation",
                      options={"probabilities": True}, runner=(loading.runner, meta, config),
                      overwrite=True, **predict_kw)
    return {"probabilities": sibling(out, "_probabilities.tif"), "band": k + 1, "class": names[k],
            "model": str(model), "predict": r["files"][0]}


def predicted_footprints(image, model, out, *, building: int | None = None,
                         threshold: float = 0.5, predict_kw: dict | None = None,
                         **footprint_kw) -> dict:
    """Building polygons of ``image`` found by the segmentation ``model`` into ``out``: the
    building probability (band of :func:`model_buildings`) traced by
    :func:`rsgeo.footprints.footprints` (``footprint_kw``: its options). The summary says
    where the buildings came from (``buildings_from``)."""
    driver_for(out)  # refused before the model runs
    check_output(out, footprint_kw.get("overwrite", False), inputs=(image, model))
    out = Path(out)  # a stop or failure removes the work folder and the folders made for out
    with parents_made(out.resolve()), \
            tempfile.TemporaryDirectory(prefix=".rsgeo-", dir=out.resolve().parent) as work:
        found = model_buildings(image, model, work, building=building, **(predict_kw or {}))
        summary = footprints(found["probabilities"], out, threshold=threshold, band=found["band"],
                             source=image, **footprint_kw)
    summary["buildings_from"] = {"model": found["model"], "class": found["class"],
                                 "image": os.fspath(image)}
    return summary


def predicted_building_heights(image, model, buildings, out, *, overwrite: bool = False,
                               predict_kw: dict | None = None, **heights_kw) -> dict:
    """Heights of ``buildings`` on ``image``: ``predict-height`` with ``model`` (a path, or a
    list of paths: an ensemble) into a temporary raster beside ``out``, measured by
    :func:`rsgeo.footprints.heights.building_heights` (``heights_kw``: its options). The
    summary says where the heights came from (``heights_from``)."""
    driver_for(out)  # refused before the model runs
    check_output(out, overwrite, inputs=(image, buildings))
    require_overlap(buildings, image)  # so are footprints all off the image
    out = Path(out)
    with parents_made(out.resolve()), \
            tempfile.TemporaryDirectory(prefix=".rsgeo-", dir=out.resolve().parent) as work:
        heights = Path(work) / f"{Path(image).stem}_height.tif"
        r = predict_height_file(image, model, heights, overwrite=True, **(predict_kw or {}))
        summary = building_heights(heights, buildings, out, overwrite=overwrite, **heights_kw)
    summary["heights"] = os.fspath(image)
    summary["heights_from"] = {"models": r.get("models", [os.fspath(m) for m in (
        model if isinstance(model, (list, tuple)) else [model])]), "image": os.fspath(image),
        "predict": {k: r[k] for k in ("seconds", "mpx", "resampled", "input_stretch",
                                      "height_median") if k in r}}
    return summary
