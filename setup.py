"""Installs the top-level folders under one namespace package, `twinray`: protos/twinray/v1 ->
twinray.v1 (the generated protobuf code), shared/ -> twinray.shared, services/ -> twinray.services,
training/ -> twinray.training. Metadata and dependencies live in pyproject.toml; only this mapping
needs code."""

from setuptools import find_packages, setup

ROOTS = {
    "twinray.v1": "protos/twinray/v1",
    "twinray.shared": "shared",
    "twinray.services": "services",
    "twinray.training": "training",
}

setup(
    package_dir=ROOTS,
    packages=[f"{name}.{sub}" if sub else name for name, folder in ROOTS.items() for sub in ["", *find_packages(folder)]],
    package_data={"twinray.services": ["serve_config.yaml"], "twinray.shared.data": ["real_statistics.json"]},
)
