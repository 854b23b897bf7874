"""The compiled parts of fedacq (everything else is in pyproject.toml): the histogram kernel and batched
exponentiations, both on the four-lane Montgomery products of ``fedacq/crypto/_lanes.h``.

Building them needs a C compiler and GMP's headers and library (Debian/Ubuntu: ``gcc libgmp-dev``).
"""

from setuptools import Extension, setup

_common = {"libraries": ["gmp"], "include_dirs": ["fedacq/crypto"], "depends": ["fedacq/crypto/_lanes.h"],
           "extra_compile_args": ["-O3", "-std=gnu99"]}
setup(ext_modules=[Extension("fedacq.learn._histkernel", ["fedacq/learn/_histkernel.c"], **_common),
                   Extension("fedacq.crypto._powmod", ["fedacq/crypto/_powmod.c"], **_common)])
