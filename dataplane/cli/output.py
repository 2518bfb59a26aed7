"""Tables and JSON for every command that prints."""

from __future__ import annotations

import json
import sys


def add_output(p) -> None:
    p.add_argument("-o", "--output", choices=("table", "json"), default="table",
                   help="output format (default: %(default)s)")


def is_json(args) -> bool:
    return getattr(args, "output", "table") == "json"


def emit(args, rows, columns=()) -> None:
    """rows (a list of dicts, or one dict) as JSON, or as a table of columns."""
    if is_json(args):
        json.dump(rows, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    if isinstance(rows, dict):
        for k, v in rows.items():
            print(f"{k:18} {cell(v)}")
        return
    if not rows:
        print("(none)")
        return
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def say(args, text: str, obj) -> None:
    """A one-line report, or obj as JSON."""
    if is_json(args):
        emit(args, obj)
    else:
        print(text)


def cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        return ",".join(f"{k}={n}" for k, n in v.items()) or "-"
    if isinstance(v, list):
        return ",".join(map(str, v)) or "-"
    return str(v)


def add_vni_filter(p) -> None:
    p.add_argument("--vni", help="only rows of this VNI")


def vni_filter(text) -> int | None:
    """--vni as a filter: a VNI, 0 for what belongs to no VNI, None when not given."""
    if text is None:
        return None
    from dataplane.core import model  # noqa: PLC0415 - output stays import-light
    return 0 if str(text).strip() == "0" else model.parse_vni(text)


def by_vni(args, rows: list[dict]) -> list[dict]:
    """rows, or only those of --vni when given."""
    vni = vni_filter(getattr(args, "vni", None))
    return rows if vni is None else [r for r in rows if r.get("vni") == vni]
