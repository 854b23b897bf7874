"""The compiled part of fedacq: the histogram kernel's products over GMP (everything else is in pyproject.toml).

Building it needs a C compiler and GMP's headers and library (Debian/Ubuntu: ``gcc libgmp-dev``).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("fedacq.learn._histkernel", ["fedacq/learn/_histkernel.c"], libraries=["gmp"],
                             extra_compile_args=["-O2", "-std=c99"])])
