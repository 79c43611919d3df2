"""Build script: the package, plus the cffi extension `pywg.native._hotpath` (the C hot path).

The extension links OpenSSL's libcrypto; building it needs gcc, the Python headers and
libssl-dev (scripts/install-deps.sh installs them).
"""

from setuptools import setup

setup(cffi_modules=["pywg/native/build.py:ffibuilder"])
