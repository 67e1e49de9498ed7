"""Packaging beyond what pyproject.toml can say: the top-level `sql/` and `abi/` folders ship inside the
wheel as the packages `indexer._sql` and `indexer._abi` (read with importlib.resources)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["indexer*", "projections*"]), "indexer._sql", "indexer._abi"],
    package_dir={"indexer._sql": "sql", "indexer._abi": "abi"},
    package_data={
        "indexer": ["py.typed"],
        "projections": ["py.typed"],
        "indexer._sql": ["*.sql", "views/*.sql"],
        "indexer._abi": ["*.json"],
    },
)
