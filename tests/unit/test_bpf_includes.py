"""bpf/lib's headers include what they use (as Cilium's bpf/ does): each includes lib/common.h
(the uapi headers, dp_abi.h, wire.h) and every other header of ours whose functions, macros or
maps it names. Before, they compiled only in lib/all.h's order: a header moved up the list, or
used on its own, failed with names undeclared. wire.h, which the C helper compiles too, includes
dp_abi.h. A plain-text reading: definitions are found by their forms in this tree."""

from __future__ import annotations

import re
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "bpf" / "lib"
ABI = ("dp_abi.h", "dp_abi_meters.h")      # one ABI (dp_abi.h includes the other)


def _code(path: Path) -> str:
    """The file without comments and string literals."""
    text = re.sub(r"/\*.*?\*/", " ", path.read_text(), flags=re.S)
    text = re.sub(r'"[^"\n]*"', '""', text)
    return re.sub(r"//[^\n]*", " ", text)


def _defined(code: str) -> set[str]:
    names = set(re.findall(r"^static\s+(?:__always_inline\s+|inline\s+)*[\w\s*]+?\b(\w+)\s*\(", code, re.M))
    names |= set(re.findall(r"^#\s*define\s+(\w+)", code, re.M))
    names |= set(re.findall(r"BPF_TABLE_PINNED\([^,]+,[^,]+,[^,]+,\s*(\w+)", code))
    names |= set(re.findall(r"^DP_RINGBUF_PINNED\((\w+)", code, re.M))
    names |= set(re.findall(r"^static\s+[\w\s*]*\(\s*\*\s*(\w+)\s*\)", code, re.M))   # helper pointers
    names |= {f"{kind} {name}" for kind, name in re.findall(r"^(struct|enum)\s+(\w+)\s*\{", code, re.M)}
    names |= set(re.findall(r"^\s*(DP_\w+)\s*[,=]", code, re.M))      # enumerators
    return names


def _used(code: str) -> set[str]:
    return set(re.findall(r"(?:\b(?:struct|enum) )?\b\w+\b", re.sub(r"\b(struct|enum)\s+", r"\1 ", code)))


def _includes(path: Path) -> set[str]:
    return {Path(n).name for n in re.findall(r'^\s*#\s*include\s+"([^"]+)"', path.read_text(), re.M)}


def _owners() -> dict[str, str]:
    owners = {}
    for path in [*LIB.glob("*.h"), *(LIB.parent / n for n in ABI)]:
        for name in _defined(_code(path)):
            assert name not in owners, f"{name} is defined in {owners.get(name)} and {path.name}"
            owners[name] = "dp_abi.h" if path.name in ABI else path.name
    return owners


def missing(path: Path, owners: dict[str, str]) -> dict[str, list[str]]:
    """{header it names and does not include: [the names]}; through common.h count what common.h includes."""
    have = _includes(path) | {path.name}
    if "common.h" in have:
        have |= _includes(LIB / "common.h")
    out: dict[str, list[str]] = {}
    for name in _used(_code(path)):
        owner = owners.get(name)
        if owner and owner not in have:
            out.setdefault(owner, []).append(name)
    return {k: sorted(v) for k, v in out.items()}


def test_each_header_includes_the_headers_whose_names_it_uses():
    owners = _owners()
    assert len(owners) > 100 and owners["struct dp_config"] == "dp_abi.h" and owners["dp_config"] == "maps.h"
    gaps = {p.name: m for p in sorted(LIB.glob("*.h")) if p.name != "all.h" and (m := missing(p, owners))}
    assert not gaps, f"headers that name what they do not include: {gaps}"


def test_each_program_header_starts_from_common_h():
    """The uapi types and helpers (struct iphdr, struct __sk_buff, TC_ACT_*) come from common.h."""
    plain = {"all.h", "common.h", "wire.h"}        # wire.h is plain C, compiled by the C helper too
    lacking = [p.name for p in sorted(LIB.glob("*.h")) if p.name not in plain and "common.h" not in _includes(p)]
    assert not lacking, lacking


def test_the_check_sees_a_missing_include(tmp_path):
    """The reading above finds a gap where there is one: encap.h without its icmp.h."""
    owners = _owners()
    text = (LIB / "encap.h").read_text().replace('#include "lib/icmp.h"\n', "")
    (tmp_path / "encap.h").write_text(text)
    assert "icmp_frag_needed" in missing(tmp_path / "encap.h", owners).get("icmp.h", [])
