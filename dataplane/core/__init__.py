"""Definitions everything else stands on: the ABI read from bpf/dp_abi.h, validation (model),
map keys, errors, the typed node state, process helpers and the C helper binding."""
