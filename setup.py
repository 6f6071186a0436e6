"""Package layout that pyproject.toml alone cannot say: two folders install under other names.

``kernels/`` installs as ``afnext_kernels`` (PyPI already has a package named ``kernels``) and ``conf/``
as ``afnext.conf`` so the Hydra configs ship with ``pip install .``. Everything else, package data included, is
in pyproject.toml.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["afnext", "afnext.*"])
packages += ["afnext_kernels"] + [f"afnext_kernels.{p}" for p in find_packages("kernels")]
packages += ["afnext.conf"]

setup(
    packages=packages,
    package_dir={"afnext_kernels": "kernels", "afnext.conf": "conf"},
)
