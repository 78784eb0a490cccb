"""Run specs shipped inside the package, so that `jetrl demo` (and `jetrl bench`, which starts
from the demo's spec) work from any install, the Docker image and a wheel included, not only
from a checkout.

`arithmetic.yaml` here is the one copy of the demo's spec; `examples/arithmetic.yaml` in the
repository is a link to it. It ships as package data (pyproject.toml,
[tool.setuptools.package-data]) and is found with importlib.resources.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["DEMO_SPEC", "packaged_spec"]


def packaged_spec(name: str) -> Path:
    """The file of a run spec shipped in this package, e.g. "arithmetic.yaml". An installed
    package is a directory (setuptools installs no zips), so its resources are plain files."""
    resource = resources.files(__name__).joinpath(name)
    if not resource.is_file():
        raise FileNotFoundError(f"no run spec {name!r} in the package {__name__}")
    return Path(str(resource))


DEMO_SPEC = packaged_spec("arithmetic.yaml")
