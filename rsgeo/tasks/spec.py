"""The task registry: one :class:`TaskSpec` per fine-tuning task, and the input sets.

A spec declares everything the layers around a task need, so they branch on the spec, never
on the task's name: the chip modality holding the reference (``target``), the input sets
it accepts, its heads (the first is the default), how many output channels its network has,
how to build the network around an encoder, the training loss, what validation scores (an
accumulator, the score key and its direction), the graph inputs ``rsgeo export`` traces,
and what prediction writes (:class:`Writer`). ``build_task_model``, the fine-tuning data
views, validation, export and the ``rsgeo finetune`` choices are all read from here.

Adding a task: one module defining ``SPEC = TaskSpec(...)`` and one line registering it
(``rsgeo/tasks/__init__.py``, or :func:`register` at run time); see CONTRIBUTING.md.

This module imports no third-party code: the CLI reads the registry for its help text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from rsgeo.errors import InputError

# input set name -> chip modalities concatenated channel-wise (images first)
INPUTS: dict[str, tuple[str, ...]] = {
    "rgb": ("rgb",), "dsm": ("dsm",), "ndsm": ("ndsm",), "rgb+dsm": ("rgb", "dsm"),
    "rgb+ndsm": ("rgb", "ndsm")}


@dataclass(frozen=True)
class Layer:
    """One output of prediction: a raster band (or a group of them), or a table column.

    ``dtype`` is numpy's name; ``per_class`` means one band per class; ``optional`` layers
    are written on request (``--probabilities``).
    """

    name: str
    dtype: str
    units: str
    description: str
    nodata: float | None = None
    per_class: bool = False
    optional: bool = False


@dataclass(frozen=True)
class Writer:
    """What prediction writes for a task.

    ``kind``: ``raster`` (bands on the input grid, from the blended tile outputs) or
    ``rows`` (one table row per tile or input); ``reduce``: how the blended model output
    becomes ``layers`` (``identity``, ``softmax-argmax``, ``sigmoid``, ``softmax``).
    """

    kind: str
    reduce: str
    layers: tuple[Layer, ...]

    def describe(self) -> dict:
        """A JSON-ready description (stored in exported models' metadata as ``output``)."""
        return {"kind": self.kind, "reduce": self.reduce,
                "layers": [dict(vars(layer)) for layer in self.layers]}


@dataclass(frozen=True)
class TaskSpec:
    """One fine-tuning task (see the module docstring).

    Callables (heavy libraries imported inside them, so the registry loads fast):

    - ``out_channels(config) -> int``: output channels of the main head;
    - ``build(encoder, config) -> nn.Module``: the network around a ``FeatureEncoder``;
    - ``loss(net, batch, class_weights) -> (loss, logs)``: batches as
      :meth:`rsgeo.finetune.data.TaskView.on_device` makes them;
    - ``predict(net, batch) -> Tensor``: what validation scores (metres, class ids, 0/1);
    - ``accumulator(num_classes, net)``: an object with ``update(net, batch)`` and
      ``result() -> dict`` (flat metrics; ``score`` is one of its keys);
    - ``make_target(arr, crop) -> ndarray | int``: the cropped stored target -> the
      sample's ``target``.
    """

    name: str
    summary: str
    target: str
    inputs: tuple[str, ...]
    heads: tuple[str, ...]
    out_channels: Callable[[dict], int]
    build: Callable[[Any, dict], Any]
    loss: Callable[..., tuple]
    predict: Callable[[Any, dict], Any]
    accumulator: Callable[[int | None, Any], Any]
    score: str
    make_target: Callable[[Any, int], Any]
    writer: Writer
    higher_is_better: bool = True
    target_float: bool = False          # float targets (metres) vs int64 labels
    needs_classes: bool = False         # num_classes and the class table matter
    weighted_loss: bool = False         # loss() applies --class-weights (one per class)
    units: str = "class"                # checkpoint meta "units"
    model_inputs: tuple[str, ...] = ("x",)          # batch keys fed to the network
    export_inputs: tuple[str, ...] = ("image",)     # ONNX graph input names (same order)
    extra_modalities: tuple[str, ...] = ()          # chips read besides inputs and target
    aux_landcover: bool = False         # supports the land-cover auxiliary head
    preview: str | None = "classes"     # val_preview.png: "heights", "classes" or None
    legacy_heads: tuple[str, ...] = field(default=())  # heads old checkpoints record

    @property
    def default_head(self) -> str:
        return self.heads[0]

    def check_head(self, head: str | None) -> str:
        """The head to use (``None``: the default); InputError naming the allowed ones."""
        if head is None:
            return self.default_head
        if head not in self.heads:
            raise InputError(f"--head {head} is not available for --task {self.name} "
                             f"(allowed: {', '.join(self.heads)})")
        return head

    def check_inputs(self, inputs: str) -> tuple[str, ...]:
        """The modalities of input set ``inputs``; InputError when the task refuses it."""
        if inputs not in INPUTS:
            raise InputError(f"--modalities must be one of {', '.join(INPUTS)}, got {inputs!r}")
        if inputs not in self.inputs:
            why = f" (its target is {self.target})" if self.target in INPUTS[inputs] else ""
            raise InputError(f"--modalities {inputs} cannot feed --task {self.name}{why}; "
                             f"allowed: {', '.join(self.inputs)}")
        return INPUTS[inputs]

    def class_modality(self, aux: bool = False) -> str | None:
        """The chip modality whose values are the class ids (the target of a task with
        classes, ``labels`` for the land-cover ``aux`` head); None when classes do not
        matter."""
        return self.target if self.needs_classes else ("labels" if aux else None)

    def check_classes(self, num_classes: int | None, class_weights=None,
                      declared: int | None = None, aux: bool = False,
                      found: int | None = None) -> int | None:
        """The class count to train with: ``num_classes``, else ``declared`` (the dataset's
        largest class id + 1, None when it lists no classes); ``num_classes`` unchanged for
        a task without classes (and no land-cover ``aux`` head). ``found``: the largest id
        in the label chips + 1 (:func:`rsgeo.data.folder.label_classes`), for datasets
        that list no classes. InputError, before any run folder exists, for
        ``class_weights`` given to a task whose loss takes none (they were ignored), for a
        count below the dataset's class ids (labels above it would end training with an
        index error) and for ``class_weights`` that are not one finite, non-negative
        weight per class (``--class-weights``)."""
        if class_weights is not None and not self.weighted_loss:
            takes = [s.name for s in _REGISTRY.values() if s.weighted_loss]
            raise InputError(f"--class-weights has no effect on --task {self.name}: its loss "
                             "takes no class weights" + (
                                 f" (tasks that do: {', '.join(takes)})" if takes else ""))
        if not (self.needs_classes or aux):
            return num_classes
        if num_classes is not None and declared is not None and num_classes < declared:
            raise InputError(f"--num-classes {num_classes} is below the dataset's classes "
                             f"(class ids up to {declared - 1} in its dataset.json): give "
                             f"--num-classes {declared} or more, or leave it out")
        if num_classes is not None and found is not None and num_classes < found:
            raise InputError(f"--num-classes {num_classes} is below the class ids in the "
                             f"dataset's label chips (up to {found - 1}; its dataset.json "
                             f"lists no classes): give --num-classes {found} or more")
        n = num_classes or declared
        if n is None:
            raise InputError("the dataset does not list its classes; pass --num-classes" + (
                f" ({found} or more: its label chips hold class ids up to {found - 1})"
                if found else ""))
        if class_weights is not None:
            w = [float(v) for v in class_weights]
            if len(w) != n:
                raise InputError(f"--class-weights has {len(w)} value(s); --task {self.name} "
                                 f"here has {n} classes (ids 0-{n - 1}): give one weight each")
            if not all(0 <= v < float("inf") for v in w) or not sum(w) > 0:
                raise InputError(f"--class-weights {','.join(f'{v:g}' for v in w)}: weights "
                                 "must be finite, non-negative and not all 0")
        return n

    def model_args(self, batch: dict) -> tuple:
        """The network's positional inputs from a prepared batch."""
        return tuple(batch[k] for k in self.model_inputs)


_REGISTRY: dict[str, TaskSpec] = {}


def register(spec: TaskSpec, replace: bool = False) -> TaskSpec:
    """Add ``spec`` to the registry (``replace=True`` to redefine a name); returns it."""
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"register() takes a TaskSpec, got {type(spec).__name__}")
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"task {spec.name!r} is already registered")
    bad = [i for i in spec.inputs if i not in INPUTS]
    if bad or not spec.heads or not spec.inputs:
        raise ValueError(f"task {spec.name!r}: needs heads and inputs from {', '.join(INPUTS)}")
    if len(spec.model_inputs) != len(spec.export_inputs):
        raise ValueError(f"task {spec.name!r}: one export input per model input")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a task (tests that register toy tasks clean up with this)."""
    _REGISTRY.pop(name, None)


def task_names() -> tuple[str, ...]:
    """Registered task names, in registration order."""
    return tuple(_REGISTRY)


def get_task(name: str) -> TaskSpec:
    """The spec of task ``name``; InputError listing the registered tasks otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown task {name!r}; one of {', '.join(_REGISTRY)}") from None


def all_heads() -> tuple[str, ...]:
    """Every head some registered task accepts (CLI choices)."""
    return tuple(dict.fromkeys(h for s in _REGISTRY.values() for h in s.heads))
