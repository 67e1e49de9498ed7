"""A small protocol history on a simulated chain, indexed to its head, plus what it did (for checking models).

Every expected value a test derives comes from `Scenario.actions`, never from the projections' code.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg

from indexer.config import Config
from indexer.errors import ExitCode
from indexer.runtime.app import Indexer
from tests.support.protocol_logs import ADDRESSES, POOL, VAULT, emergency_burn_logs, event_log, sync_logs
from tests.support.simchain import SimChain
from tests.support.tables import make_config

ALICE = "0x" + "1a" * 20
BOB = "0x" + "2b" * 20
CAROL = "0x" + "3c" * 20
DAVE = "0x" + "4d" * 20
NOBODY = "0x" + "5e" * 20


@dataclass
class Action:
    kind: str  # sync, emergency, deposit, join
    user: str
    amount: int = 0
    new: int = 0
    fee: int = 0
    participant_type: int = 0


@dataclass
class Scenario:
    chain: SimChain
    config: Config
    actions: list[Action] = field(default_factory=list)
    _tx: int = 0

    def tx(self) -> str:
        self._tx += 1
        return "0x" + uuid.uuid5(uuid.NAMESPACE_OID, f"{self.config.database.schema_}:{self._tx}").hex * 2

    def sync(self, user: str, new: int, delta: int, fee: int) -> list:
        self.actions.append(Action("sync", user, amount=delta, new=new, fee=fee))
        return sync_logs(self.tx(), user, new, delta, fee)

    def emergency(self, user: str, burned: int) -> list:
        self.actions.append(Action("emergency", user, amount=burned))
        return emergency_burn_logs(self.tx(), user, burned)

    def deposit(self, user: str, wei: int) -> list:
        self.actions.append(Action("deposit", user, amount=wei))
        return [event_log("fee_vault", VAULT, "Deposited", self.tx(), user=user, amount=wei)]

    def join(self, user: str, participant_type: int, amount: int) -> list:
        self.actions.append(Action("join", user, amount=amount, participant_type=participant_type))
        return [
            event_log(
                "yield_scales_pool",
                POOL,
                "ParticipantJoined",
                self.tx(),
                user=user,
                participantType=participant_type,
                amount=amount,
            )
        ]

    # -- what the history implies ---------------------------------------------------------------

    def last_sats(self, user: str) -> int:
        last = 0
        for a in self.actions:
            if a.user == user and a.kind == "sync":
                last = a.new
            elif a.user == user and a.kind == "emergency":
                last = 0
        return last

    def rbtc(self, user: str) -> int:
        return sum(
            a.amount if a.kind == "sync" else -a.amount
            for a in self.actions
            if a.user == user and a.kind in ("sync", "emergency")
        )

    def users(self) -> set[str]:
        return {a.user for a in self.actions}

    def index(self) -> None:
        """Index the chain to its head (the daemon's own run loop, to_block)."""
        assert Indexer(self.config).run(to_block=self.chain.head) == ExitCode.OK


def build_history(s: Scenario) -> None:
    """The standard history: mints, burns, emergency burns, deposits, a YieldScales trader."""
    c = s.chain
    c.mine(s.deposit(ALICE, 10**16) + s.deposit(BOB, 3 * 10**15))
    c.mine(s.sync(ALICE, 5000, 5000, 10**15))
    c.mine(s.sync(BOB, 2000, 2000, 2 * 10**14) + s.sync(CAROL, 1000, 1000, 10**14))
    c.mine(s.sync(ALICE, 8000, 3000, 4 * 10**14))
    c.mine(s.emergency(BOB, 2000))
    c.mine(s.sync(CAROL, 400, -600, 10**13) + s.sync(DAVE, 300, 300, 10**13))
    c.mine(s.emergency(DAVE, 300))
    c.mine(s.join(BOB, 1, 700))
    c.mine([], count=4)


@contextmanager
def indexed_scenario(
    database_url: str, *, history: bool = True, finalized_depth: int = 3, **chain: object
) -> Iterator[Scenario]:
    """A fresh schema, a simulated chain with the standard history (unless told not to), indexed to its head."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with SimChain(finalized_depth=finalized_depth) as sim:
        config = make_config(database_url, schema, [sim.url], ADDRESSES, **chain)
        scenario = Scenario(sim, config)
        try:
            if history:
                build_history(scenario)
                scenario.index()
            yield scenario
        finally:
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
