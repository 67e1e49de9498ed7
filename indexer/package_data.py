"""Where the SQL migrations and the ABIs are: package data of an installed wheel, or the checkout's folders.

The repository keeps them in the top-level `sql/` and `abi/` folders; the wheel ships them as the packages
`indexer._sql` and `indexer._abi` (setup.py maps the folders), read with `importlib.resources`. Running from
a checkout (no wheel installed) finds the folders beside the `indexer` package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def _data_dir(package: str, folder: str) -> Path:
    try:
        return Path(str(resources.files(package)))
    except ModuleNotFoundError:
        return _CHECKOUT / folder


def sql_dir() -> Path:
    """The folder of the numbered migrations (with `views/` inside)."""
    return _data_dir("indexer._sql", "sql")


def abi_dir() -> Path:
    """The folder of the protocol's ABI files."""
    return _data_dir("indexer._abi", "abi")
