"""Build hook: generates the gRPC stubs (qlorad/_gen/) from the repository's proto/, so a wheel or
an install always carries stubs that match the protos. Both the metadata step (egg_info, which
lists the package files) and build_py need them, so both generate. Metadata lives in
pyproject.toml."""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.egg_info import egg_info

HERE = Path(__file__).resolve().parent


def generate_stubs():
    # Import from the source tree: the package is being built, not installed.
    sys.path.insert(0, str(HERE))
    try:
        from qlorad._generate import generate
    finally:
        sys.path.pop(0)
    generate()


class BuildPyWithStubs(build_py):
    def run(self):
        generate_stubs()
        super().run()


class EggInfoWithStubs(egg_info):
    def run(self):
        generate_stubs()
        super().run()


setup(cmdclass={"build_py": BuildPyWithStubs, "egg_info": EggInfoWithStubs})
