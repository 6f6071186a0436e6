"""Package layout that pyproject.toml alone cannot say: two folders install under other names.

``kernels/afnext_kernels/`` installs as ``afnext_kernels`` and ``conf/`` as ``afnext.conf`` (so the Hydra configs
ship with ``pip install .``). ``kernels/`` itself has no ``__init__.py``: nothing at the repository root may be
importable as ``kernels``, the name of Hugging Face's package that transformers imports at start. Everything else,
package data included, is in pyproject.toml.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["afnext", "afnext.*"])
packages += ["afnext_kernels"] + [
    f"afnext_kernels.{p}" for p in find_packages("kernels/afnext_kernels")
]
packages += ["afnext.conf"]

setup(
    packages=packages,
    package_dir={"afnext_kernels": "kernels/afnext_kernels", "afnext.conf": "conf"},
)
