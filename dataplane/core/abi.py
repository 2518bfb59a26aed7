"""The fast path's ABI, read from bpf/dp_abi.h: the only definition there is.

The header keeps to a small grammar (see its top comment): integer #defines,
enums with one member per line, and structs of fixed-width fields. This module
turns it into Python constants, IntEnums and ctypes structures laid out as C
lays them out. tests/bpf/test_abi.py checks the result against the layouts bcc
generates from the compiled programs.
"""

from __future__ import annotations

import ctypes
import enum
import re
from functools import lru_cache
from pathlib import Path

# dataplane/bpf: the package data (in a checkout, a link to the top-level bpf/).
HEADER = Path(__file__).resolve().parent.parent / "bpf" / "dp_abi.h"

_TYPES = {
    "__u8": ctypes.c_uint8,
    "__u16": ctypes.c_uint16,
    "__u32": ctypes.c_uint32,
    "__u64": ctypes.c_uint64,
    # Network-order fields keep their bytes; callers convert with socket/struct.
    "__be16": ctypes.c_uint16,
    "__be32": ctypes.c_uint32,
}

_DEFINE = re.compile(r"^\s*#define\s+(\w+)\s+(\(?[-0-9xXa-fA-F<> ]+\)?)\s*(?:/\*.*)?$")
_ENUM_START = re.compile(r"^\s*enum\s+(\w+)\s*\{\s*$")
_ENUM_MEMBER = re.compile(r"^\s*(\w+)\s*(?:=\s*([^,]+?))?\s*,\s*(?:/\*.*)?$")
_STRUCT_START = re.compile(r"^\s*struct\s+(\w+)\s*\{\s*$")
_STRUCT_FIELD = re.compile(r"^\s*(struct\s+\w+|\w+)\s+(\w+)\s*(?:\[\s*(\w+)\s*\])?\s*;\s*(?:/\*.*)?$")
_END = re.compile(r"^\s*\}\s*;\s*$")
_INCLUDE = re.compile(r'^\s*#include\s+"(dp_abi_\w+\.h)"\s*$')   # a part of the header, beside it


class AbiError(Exception):
    """The header strays from the grammar this parser accepts."""


class Abi:
    def __init__(self, text: str, here: Path = HEADER.parent):
        self.constants: dict[str, int] = {}
        self.enums: dict[str, type[enum.IntEnum]] = {}
        self.structs: dict[str, type[ctypes.Structure]] = {}
        self._here = here           # where an included part is
        self._parse(text)

    def _value(self, expr: str) -> int:
        expr = expr.strip()
        if expr in self.constants:
            return self.constants[expr]
        if not re.fullmatch(r"[-0-9xXa-fA-F<>() ]+", expr):
            raise AbiError(f"unsupported expression {expr!r}")
        return int(eval(expr, {"__builtins__": {}}))  # digits, shifts and parentheses only

    def _parse(self, text: str) -> None:
        lines = iter(text.splitlines())
        for line in lines:
            if m := _DEFINE.match(line):
                self.constants[m.group(1)] = self._value(m.group(2))
            elif m := _ENUM_START.match(line):
                self._parse_enum(m.group(1), lines)
            elif m := _STRUCT_START.match(line):
                self._parse_struct(m.group(1), lines)
            elif m := _INCLUDE.match(line):
                self._parse((self._here / m.group(1)).read_text())

    @staticmethod
    def _body(lines):
        """Member lines of an enum or struct, up to its closing "};", comments skipped."""
        for line in lines:
            if _END.match(line):
                return
            stripped = line.strip()
            if stripped and not stripped.startswith(("/*", "*")):
                yield line

    def _parse_enum(self, name: str, lines) -> None:
        members: dict[str, int] = {}
        nxt = 0
        for line in self._body(lines):
            m = _ENUM_MEMBER.match(line)
            if not m:
                raise AbiError(f"enum {name}: cannot parse {line!r}")
            value = self._value(m.group(2)) if m.group(2) else nxt
            members[m.group(1)] = value
            self.constants[m.group(1)] = value
            nxt = value + 1
        self.enums[name] = enum.IntEnum(name, members)

    def _parse_struct(self, name: str, lines) -> None:
        fields = []
        for line in self._body(lines):
            m = _STRUCT_FIELD.match(line)
            if not m:
                raise AbiError(f"struct {name}: cannot parse {line!r}")
            ctype = self._ctype(m.group(1))
            if m.group(3):
                ctype = ctype * self._value(m.group(3))
            fields.append((m.group(2), ctype))
        self.structs[name] = type(name, (ctypes.Structure,), {"_fields_": fields})

    def _ctype(self, name: str):
        if name.startswith("struct "):
            return self.structs[name.split()[1]]
        try:
            return _TYPES[name]
        except KeyError:
            raise AbiError(f"unsupported type {name!r}") from None


@lru_cache(maxsize=1)
def load() -> Abi:
    return Abi(HEADER.read_text())


def drop_names() -> list[str]:
    """Drop reasons in index order, lower case without the DP_DROP_ prefix."""
    reasons = load().enums["dp_drop"]
    return [r.name.removeprefix("DP_DROP_").lower() for r in sorted(reasons) if r.name != "DP_DROP_MAX"]
