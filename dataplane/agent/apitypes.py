"""The local API's typed schema: each operation takes the parameters of its handler, and each
parameter the JSON types of its annotation (str, int, bool, None, list[...], dict and unions of
them). The handler's signature is the one place it is written; the server checks a request
against it before the handler runs, so a wrong type is the caller's usage error, named, and
never the handler's TypeError. tests/unit/test_api_schema.py holds every handler to having one.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass

from dataplane.core.errors import UsageError


@dataclass(frozen=True)
class Param:
    hint: object          # the annotation; inspect.Parameter.empty: any JSON value
    required: bool


def schema(fn) -> dict[str, Param]:
    """{parameter: Param} of a handler, from its signature and evaluated annotations."""
    hints = typing.get_type_hints(fn)
    return {name: Param(hints.get(name, inspect.Parameter.empty), p.default is inspect.Parameter.empty)
            for name, p in inspect.signature(fn).parameters.items()}


def fits(value, hint) -> bool:
    """value (as json.loads gives it) is of the JSON type hint describes."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is inspect.Parameter.empty:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if list in (hint, origin):
        return isinstance(value, list) and (not args or all(fits(v, args[0]) for v in value))
    if dict in (hint, origin):
        return isinstance(value, dict)
    raise TypeError(f"{hint!r} has no JSON form")


def describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if hint is None or hint is type(None):
        return "null"
    if list in (hint, origin):
        return f"a list of {describe(args[0])}" if args else "a list"
    names = {bool: "a boolean", int: "an integer", str: "a string", dict: "an object"}
    return names.get(hint, names.get(origin, repr(hint)))


def check(op: str, params: dict[str, Param], args: dict) -> None:
    """Raise UsageError naming what in args does not fit the operation's parameters."""
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise UsageError(f"{op}: unknown argument {unknown[0]!r} (it takes: {', '.join(params) or 'none'})")
    missing = [n for n, p in params.items() if p.required and n not in args]
    if missing:
        raise UsageError(f"{op}: missing argument {missing[0]!r}")
    for name, value in args.items():
        if not fits(value, params[name].hint):
            raise UsageError(f"{op}: {name} must be {describe(params[name].hint)}, not {type(value).__name__} "
                             f"{value!r:.60}")
