"""cffi (API mode) build of the C helper: `dataplane._cwire`. setup.py runs
it during the normal install; the declarations are read from dpwire.h, so
the binding cannot drift from the C."""

import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def cdef_text() -> str:
    with open(os.path.join(HERE, "dpwire.h")) as f:
        text = f.read()
    m = re.search(r"/\* CDEF-BEGIN \*/(.*)/\* CDEF-END \*/", text, re.S)
    if not m:
        raise RuntimeError("csrc/dpwire.h: CDEF markers missing")
    return re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S)


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "dataplane._cwire",
    '#include "dpwire.h"',
    sources=[os.path.relpath(os.path.join(HERE, f), ROOT) for f in ("dpwire.c", "testrun.c", "gen.c")],
    include_dirs=[HERE, os.path.join(ROOT, "bpf")],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=os.path.join(ROOT, "build", "cffi"), verbose=True)
