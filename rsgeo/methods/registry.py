"""The pretraining-method registry: one :class:`Method` per method, everything else reads it.

A method declares, in one ``register(Method(...))`` call: its name, a one-line summary, an
options dataclass (fields made with :func:`option`: default, help, bounds), its base
learning rate per 256 samples, the backbone kinds it supports, the modalities it reads and
``build(backbone, img_size, modality, in_chans, dsm_modality, **options)``.
:func:`build_method`, :func:`required_modalities`, :mod:`rsgeo.pretrain`'s settings and
learning rate, YAML validation and the ``rsgeo pretrain`` flags are generated from it.

This module imports no torch (``rsgeo --help`` lists the methods without loading it):
``build`` may be given as ``"package.module:function"``, imported on the first build.
The built-in methods are declared in :mod:`rsgeo.methods.catalog`.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Union, get_args, get_origin, get_type_hints

from rsgeo.errors import InputError

KINDS = {"vit": "ViT", "swin": "Swin"}   # backbone kinds (rsgeo.models.backbones)
# Chip modalities a method can pretrain on (``--modality``) and the height modalities of
# fusedmim's second encoder (``--dsm-modality``). Label and change chips are targets, not
# images; ``post_rgb`` is the second date of a change pair.
MODALITIES = ("rgb", "dsm", "ndsm")
HEIGHT_MODALITIES = ("dsm", "ndsm")


def option(default: Any, help: str, *, min: float | None = None, max: float | None = None,
           cli: bool = True):
    """A field of a method's options dataclass: its default, one line of help, bounds.

    ``cli=False`` keeps an option out of the command line (YAML and library only).
    """
    return field(default=default, metadata={"help": help, "min": min, "max": max, "cli": cli})


@dataclass(frozen=True)
class Option:
    """One option of one method, as read from its dataclass field."""

    name: str
    type: Any          # float, int, bool, str, Literal[...], tuple[float, ...]; or Optional[...]
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    cli: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def base(self) -> Any:
        """The type without ``Optional`` (None: a default decided at build time)."""
        if get_origin(self.type) is Union and type(None) in get_args(self.type):
            return next(a for a in get_args(self.type) if a is not type(None))
        return self.type

    def choices(self) -> tuple | None:
        return get_args(self.base) if get_origin(self.base) is Literal else None

    def coerce(self, value: Any) -> Any:
        """``value`` (from YAML, the CLI or a keyword) as this option's type, or InputError."""
        choices, t = self.choices(), self.base
        if value is None and t is not self.type:
            return None
        if choices is not None:
            if value not in choices:
                raise InputError(f"{self.flag} {value!r}: use {' or '.join(map(str, choices))}")
            return value
        if get_origin(t) is tuple:
            if not isinstance(value, (list, tuple)) or not all(_is_number(v) for v in value):
                raise InputError(f"{self.flag} {value!r}: give a list of numbers")
            return tuple(float(v) for v in value)
        ok = {bool: isinstance(value, bool), str: isinstance(value, str),
              int: _is_number(value) and float(value).is_integer(),
              float: _is_number(value)}.get(t, True)
        if not ok:
            raise InputError(f"{self.flag} {value!r}: not a{'n' if t is int else ''} "
                             f"{getattr(t, '__name__', t)}")
        value = t(value) if t in (int, float) else value
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise InputError(f"{self.flag} {value!r}: must be in [{self.min}, {self.max}]")
        return value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_modalities(modality: str, dsm_modality: str) -> None:
    """InputError unless ``modality`` is in :data:`MODALITIES` and ``dsm_modality`` in
    :data:`HEIGHT_MODALITIES`."""
    if modality not in MODALITIES:
        raise InputError(f"--modality {modality!r}: pretraining reads images, use "
                         f"{', '.join(MODALITIES[:-1])} or {MODALITIES[-1]}")
    if dsm_modality not in HEIGHT_MODALITIES:
        raise InputError(f"--dsm-modality {dsm_modality!r}: fusedmim's second encoder reads "
                         f"heights, use {' or '.join(HEIGHT_MODALITIES)}")


def one_modality(modality: str, dsm_modality: str) -> tuple[str, ...]:
    """A single-encoder method reads the modality it trains on."""
    return (modality,)


def resolve_ref(ref: Any) -> Any:
    """``"package.module:name"`` -> that object (imported now); anything else unchanged."""
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def single_encoder(model: type | str) -> Callable:
    """``build`` for a method over one encoder: ``model(encoder, in_chans, modality=, **options)``.

    ``model`` is the method class or ``"package.module:Class"`` (imported at the first build).
    """
    def build(backbone: str, img_size: int, modality: str = "rgb", in_chans: int = 3,
              dsm_modality: str = "dsm", **options):
        # lazy: backbones imports timm and torch; the registry stays light for `rsgeo --help`
        from rsgeo.models.backbones import build_encoder

        encoder = build_encoder(backbone, in_chans, img_size)
        return resolve_ref(model)(encoder, in_chans, modality=modality, **options)

    return build


@dataclass(frozen=True)
class Method:
    """One pretraining method.

    Attributes:
        name: the ``--method`` value.
        summary: one line for ``rsgeo pretrain --help``.
        options: a dataclass whose fields (made with :func:`option`) are the method's
            options: YAML keys, keyword arguments and ``--flags`` of the same names.
        blr: base learning rate per 256 samples (lr = blr x batch / 256 from batch 256 up, blr x sqrt(batch / 256) below, x ``lr_scale``; :func:`rsgeo.pretrain.batch_scaled_lr`).
        build: ``build(backbone, img_size, modality, in_chans, dsm_modality, **options)``
            -> a :class:`rsgeo.methods.base.PretrainMethod`; or ``"module:function"``.
        backbones: backbone kinds it works with (``vit``, ``swin``).
        modalities: ``(modality, dsm_modality) -> modalities read`` (first: the main one).
        lr_scale: ``options -> factor`` on the scaled learning rate (default 1).
    """

    name: str
    summary: str
    options: type
    blr: float
    build: Callable | str
    backbones: tuple[str, ...] = ("vit", "swin")
    modalities: Callable[[str, str], tuple[str, ...]] = one_modality
    lr_scale: Callable[[Any], float] | None = None

    def fields(self) -> list[Option]:
        """The options, in declaration order."""
        hints = get_type_hints(self.options)
        return [Option(f.name, hints[f.name], f.default, f.metadata.get("help", ""),
                       f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("cli", True))
                for f in dataclasses.fields(self.options)]

    def parse(self, values: dict) -> Any:
        """An options instance from ``{name: value}`` (unset: defaults); InputError if bad."""
        known = {o.name: o for o in self.fields()}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InputError(f"--method {self.name} does not take {', '.join(unknown)}")
        try:
            return self.options(**{k: known[k].coerce(v) for k, v in values.items()})
        except InputError as e:   # name the method: the option's range may be its own
            raise InputError(f"--method {self.name}: {e.message}") from None

    def scale(self, options: Any) -> float:
        return 1.0 if self.lr_scale is None else float(self.lr_scale(options))


_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method``; ValueError if the name is taken or a shared option changes type."""
    if method.name in _METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    if not dataclasses.is_dataclass(method.options):
        raise ValueError(f"{method.name}: options must be a dataclass")
    shared = {o.name: o for m in _METHODS.values() for o in m.fields()}
    for o in method.fields():
        if o.name in shared and shared[o.name].type != o.type:
            raise ValueError(f"{method.name}: option {o.name} is {o.type}, elsewhere "
                             f"{shared[o.name].type}")
    _METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method (tests that register their own)."""
    _METHODS.pop(name, None)


def names() -> tuple[str, ...]:
    """Registered method names, in registration order."""
    return tuple(_METHODS)


def methods() -> tuple[Method, ...]:
    return tuple(_METHODS.values())


def get(name: str) -> Method:
    """The method called ``name``; InputError listing the known ones otherwise."""
    if name not in _METHODS:
        raise InputError(f"unknown method {name!r}; use one of {', '.join(_METHODS)}")
    return _METHODS[name]


def option_names() -> tuple[str, ...]:
    """Every option any registered method takes (first-seen order)."""
    return tuple(dict.fromkeys(o.name for m in _METHODS.values() for o in m.fields()))


def required_modalities(method: str, modality: str = "rgb", dsm_modality: str = "dsm") -> tuple[str, ...]:
    """Dataset modalities a method reads (the first is the one it mainly trains on)."""
    return tuple(get(method).modalities(modality, dsm_modality))


def check_backbone_kind(method: Method, backbone: str) -> None:
    """InputError when ``backbone`` is a kind ``method`` does not support."""
    # lazy: backbones imports timm and torch; the registry stays light for `rsgeo --help`
    from rsgeo.models.backbones import backbone_kind

    kind = backbone_kind(backbone)
    if kind is None or kind in method.backbones:
        return
    others = [m.name for m in _METHODS.values() if kind in m.backbones]
    need = " or ".join(KINDS.get(k, k) for k in method.backbones)
    raise InputError(f"{method.name} needs a {need} backbone; {backbone} is a "
                     f"{KINDS.get(kind, kind)} (methods for it: {', '.join(others) or 'none'})")


def build_method(method: str, backbone: str, img_size: int, modality: str = "rgb",
                 in_chans: int = 3, dsm_modality: str = "dsm", **options):
    """A fresh method module with newly initialised encoder(s).

    Args:
        method: a registered name (:func:`names`).
        backbone: an encoder name (:func:`rsgeo.models.backbones.build_encoder`).
        img_size: training crop size in pixels.
        modality / in_chans: what a single-encoder method trains on (``rgb`` 3, ``dsm`` 1).
        options: the method's options; None values are left at the defaults.
    """
    spec = get(method)
    opts = spec.parse({k: v for k, v in options.items() if v is not None})
    check_backbone_kind(spec, backbone)
    build = resolve_ref(spec.build)
    return build(backbone, img_size, modality=modality, in_chans=in_chans,
                 dsm_modality=dsm_modality, **dataclasses.asdict(opts))
