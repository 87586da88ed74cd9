"""Commands whose options come from a registry read when the command is built.

Typer builds a command's click parameters from its callback's signature each time the
app is turned into a click command (every ``rsgeo`` invocation, every ``CliRunner``
call). :class:`DynamicCommand` is a callback whose ``__signature__`` (and ``__doc__``) is
computed at that moment, so options of methods registered at run time (a plugin, a test)
appear in ``--help`` and parse like the built-in ones. This module imports only typer.
"""

from __future__ import annotations

import inspect
from enum import Enum
from typing import Annotated, Any, Callable, Optional

import typer

from rsgeo.cli.helptext import reflow


class DynamicCommand:
    """A typer callback: ``func`` with the signature ``signature()`` returns when asked.

    ``func`` is called with every parameter as a keyword; ``doc()`` (optional) gives the
    help text.
    """

    def __init__(self, func: Callable, signature: Callable[[], inspect.Signature],
                 doc: Callable[[], str] | None = None):
        self.__name__, self.__qualname__ = func.__name__, func.__qualname__
        self.__module__ = func.__module__
        self.__annotations__ = {}   # typer reads annotations from the signature only
        self._func, self._signature, self._doc = func, signature, doc

    @property
    def __signature__(self) -> inspect.Signature:
        return self._signature()

    @property
    def __doc__(self) -> str | None:   # noqa: D105 - typer's help text, computed
        doc = self._doc() if self._doc else inspect.getdoc(self._func)
        return reflow(doc) if doc else doc

    def __call__(self, **kwargs: Any) -> Any:
        return self._func(**kwargs)


def keyword_params(func: Callable) -> list[inspect.Parameter]:
    """``func``'s parameters (annotations evaluated) as keyword-only, so they can be mixed."""
    sig = inspect.signature(func, eval_str=True)
    return [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD]


def choice_enum(name: str, values) -> type[Enum]:
    """A ``str`` Enum of ``values`` (typer shows and checks them as choices)."""
    return Enum(name, [(str(v), str(v)) for v in values], type=str)


def option_param(name: str, kind: Any, help: str, *, choices=None, min=None, max=None,
                 default: Any = None) -> inspect.Parameter:
    """A keyword-only ``--name`` option (``--name/--no-name`` for a bool), default None.

    ``kind``: float, int, bool or str; ``choices`` make it a choice option.
    """
    flag = "--" + name.replace("_", "-")
    decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
    if choices is not None:
        kind = choice_enum("".join(w.title() for w in name.split("_")), choices)
    bounds = {k: v for k, v in (("min", min), ("max", max)) if v is not None}
    info = typer.Option(*decls, help=help, **(bounds if kind in (int, float) else {}))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[Optional[kind], info])


def plain(value: Any) -> Any:
    """An Enum choice as its value; anything else unchanged."""
    return value.value if isinstance(value, Enum) else value
