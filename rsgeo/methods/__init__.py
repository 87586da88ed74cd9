"""Pretraining methods: one model module each, declared in a registry that builds them by name.

``rsgeo pretrain --help`` lists them (name, summary, options, defaults); the built-in five
(mae, simmim, selectivemae, ctxmim, fusedmim) are declared in :mod:`rsgeo.methods.catalog`,
and :mod:`rsgeo.methods.registry` says what a declaration holds. Each method is an
``nn.Module`` with ``forward(batch) -> (loss, logs)`` (the engine's contract),
``preview(batch)`` and ``encoders()``; see :mod:`rsgeo.methods.base`.

Importing this package imports no torch; building a method does.
"""

from __future__ import annotations

from rsgeo.methods import catalog  # noqa: F401  (registers the built-in methods)
from rsgeo.methods.registry import (Method, build_method, get, methods, names, option,
                                    option_names, register, required_modalities,
                                    single_encoder, unregister)

__all__ = ["Method", "build_method", "get", "methods", "names", "option", "option_names",
           "register", "required_modalities", "single_encoder", "unregister"]
