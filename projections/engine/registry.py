"""Every projection the indexer knows, by name."""

from __future__ import annotations

from indexer.errors import ConfigError
from projections.models.balances import BalancesProjection
from projections.models.base import Projection
from projections.models.emergency_burns import EmergencyBurnsProjection
from projections.models.oracle_operations import OracleOperationsProjection
from projections.models.transactions import TransactionsProjection
from projections.models.yield_scales import YieldScalesProjection

ALL: tuple[type[Projection], ...] = (
    BalancesProjection,
    TransactionsProjection,
    EmergencyBurnsProjection,
    YieldScalesProjection,
    OracleOperationsProjection,
)
NAMES = tuple(p.name for p in ALL)


class UnknownProjection(ConfigError):
    """A projection name that is not registered."""


def build(names: list[str] | tuple[str, ...] | None = None) -> list[Projection]:
    """Projection instances for the given names (all when None); unknown names raise UnknownProjection."""
    wanted = list(names) if names else list(NAMES)
    by_name = {p.name: p for p in ALL}
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise UnknownProjection(f"unknown projection(s) {', '.join(unknown)}; known: {', '.join(NAMES)}")
    return [by_name[n]() for n in wanted]
