"""Fine-tuning tasks: the registry (:mod:`rsgeo.tasks.spec`) and the built-in tasks.

``get_task(name)`` gives a :class:`~rsgeo.tasks.spec.TaskSpec`; everything task-specific
(model building, data targets, loss, validation, export inputs, prediction output, CLI
choices) is read from it. A new task is one module defining ``SPEC`` plus one line in
``BUILTIN`` below (or ``register(spec)`` at run time).
"""

from __future__ import annotations

from rsgeo.tasks import change, classification, height, segmentation
from rsgeo.tasks.spec import (INPUTS, Layer, TaskSpec, Writer, all_heads, get_task, register,
                              task_names, unregister)

BUILTIN = (height.SPEC, segmentation.SPEC, change.SPEC, classification.SPEC)
for _spec in BUILTIN:
    register(_spec, replace=True)

__all__ = ["INPUTS", "Layer", "TaskSpec", "Writer", "all_heads", "get_task", "register",
           "task_names", "unregister"]
