"""Build script. The cffi extension for the per-packet hot path is added here
by the C hot-path work; until then this installs the pure-Python package."""

from setuptools import setup

setup()
