"""Build hook: generates the gRPC stubs (qlorad/_gen/) from the repository's proto/ before the
package files are collected, so a wheel or an install always carries stubs that match the protos.
Project metadata lives in pyproject.toml."""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithStubs(build_py):
    def run(self):
        # Import from the source tree: the package is being built, not installed.
        sys.path.insert(0, str(HERE))
        try:
            from qlorad._generate import generate
        finally:
            sys.path.pop(0)
        generate()
        super().run()


setup(cmdclass={"build_py": BuildPyWithStubs})
