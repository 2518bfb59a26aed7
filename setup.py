"""Only for the cffi extension (csrc/): everything else is in pyproject.toml."""
from setuptools import setup

setup(cffi_modules=["csrc/ffi_build.py:ffibuilder"])
