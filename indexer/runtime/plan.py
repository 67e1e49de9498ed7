"""Which components a run starts, parsed once from `run --only ...`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from indexer.errors import ConfigError
from indexer.store.status import FOLLOWER, PROJECTION_PREFIX
from projections.engine import registry


@dataclass(frozen=True)
class RunPlan:
    """The follower and/or a set of projections (by name). `RunPlan.everything()` is a plain `run`."""

    follower: bool
    projections: tuple[str, ...]

    @classmethod
    def everything(cls) -> RunPlan:
        return cls(True, registry.NAMES)

    @classmethod
    def parse(cls, only: Sequence[str] | None) -> RunPlan:
        """`only` items are 'follower' or 'projection:NAME'; none means everything. Raises ConfigError (exit 2)
        naming the bad item."""
        if not only:
            return cls.everything()
        names: list[str] = []
        for item in only:
            if item == FOLLOWER:
                continue
            if not item.startswith(PROJECTION_PREFIX):
                raise ConfigError(f"--only {item!r}: expected {FOLLOWER!r} or '{PROJECTION_PREFIX}NAME'")
            name = item[len(PROJECTION_PREFIX) :]
            if name not in registry.NAMES:
                raise ConfigError(f"--only {item!r}: no projection {name!r} (known: {', '.join(registry.NAMES)})")
            if name not in names:
                names.append(name)
        return cls(FOLLOWER in only, tuple(names))
