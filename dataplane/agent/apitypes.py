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


ANY = inspect.Parameter.empty       # an unannotated parameter: any JSON value
MORE = "**"                         # the key under which a handler's **kwargs stands: other names allowed


@dataclass(frozen=True)
class Param:
    hint: object
    required: bool


def schema(fn) -> dict[str, Param]:
    """{parameter: Param} of a handler, from its signature and evaluated annotations. A type
    with no JSON form raises here (at the server's start), not at the first request."""
    hints = typing.get_type_hints(fn)
    out = {}
    for name, p in inspect.signature(fn).parameters.items():
        if p.kind is p.VAR_POSITIONAL:
            continue                                   # a JSON request names its arguments
        hint = hints.get(name, ANY)
        _json_form(hint)
        out[MORE if p.kind is p.VAR_KEYWORD else name] = Param(hint, p.kind is not p.VAR_KEYWORD
                                                               and p.default is inspect.Parameter.empty)
    return out


def _json_form(hint) -> None:
    if hint is ANY or hint is None or hint in (type(None), bool, int, str, list, dict):
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType, list, dict):
        for a in args if origin is not dict else ():
            _json_form(a)
        return
    raise TypeError(f"{hint!r} has no JSON form")


def fits(value, hint) -> bool:
    """value (as json.loads gives it) is of the JSON type hint describes."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is ANY:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:         # JSON does not tell 1450 from 1450.0, nor do model.parse_int and its callers
        return (isinstance(value, int) and not isinstance(value, bool)) or \
            (isinstance(value, float) and value.is_integer())
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
        return f"a list of {PLURAL.get(args[0], describe(args[0]))}" if args else "a list"
    names = {bool: "a boolean", int: "an integer", str: "a string", dict: "an object"}
    return names.get(hint, names.get(origin, repr(hint)))


PLURAL = {bool: "booleans", int: "integers", str: "strings", dict: "objects"}


def check(op: str, params: dict[str, Param], args: dict) -> None:
    """Raise UsageError naming what in args does not fit the operation's parameters."""
    unknown = sorted(set(args) - set(params))
    if unknown and MORE not in params:
        raise UsageError(f"{op}: unknown argument {unknown[0]!r} (it takes: {', '.join(params) or 'none'})")
    missing = [n for n, p in params.items() if p.required and n not in args]
    if missing:
        raise UsageError(f"{op}: missing argument {missing[0]!r}")
    for name, value in args.items():
        p = params.get(name) or params[MORE]
        if not fits(value, p.hint):
            raise UsageError(f"{op}: {name} must be {describe(p.hint)}, not {type(value).__name__} {value!r:.60}")
