"""Raw logs of the protocol's events, encoded from the ABIs in abi/, for the simulated chain."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from eth_abi import encode

from indexer.config import ABI_DIR, DEFAULT_ABI_FILES
from indexer.decode.decoder import topic0_of
from tests.support.simchain import RawLog

# Emitter addresses of the protocol's contracts on the simulated chain.
AGG, SYNTH, VAULT, WRBTC, POOL = ("0x" + c * 20 for c in ("a1", "b2", "c3", "d4", "e5"))
ADDRESSES = {
    "oracle_aggregator": AGG,
    "rbtc_synth": SYNTH,
    "fee_vault": VAULT,
    "vault_wrbtc": WRBTC,
    "yield_scales_pool": POOL,
}
ZERO = "0x" + "00" * 20


@cache
def _events(role: str) -> dict[str, dict]:
    abi = json.loads((Path(ABI_DIR) / DEFAULT_ABI_FILES[role]).read_text())
    return {e["name"]: e for e in abi if e["type"] == "event"}


def _topic(kind: str, value: object) -> str:
    return "0x" + encode([kind], [value]).hex()


def event_log(role: str, address: str, name: str, tx_hash: str | None = None, **args: object) -> RawLog:
    """A RawLog of the named event of a contract role, with arguments by name."""
    event = _events(role)[name]
    topics = [topic0_of(event)]
    body_types, body_values = [], []
    for param in event["inputs"]:
        value = args[param["name"]]
        if param.get("indexed"):
            topics.append(_topic(param["type"], value))
        else:
            body_types.append(param["type"])
            body_values.append(value)
    return RawLog(address=address, topics=topics, data="0x" + encode(body_types, body_values).hex(), tx_hash=tx_hash)


def sync_logs(tx: str, user: str, new: int, delta: int, fee: int) -> list[RawLog]:
    """The logs of one `sync` transaction, in chain order: the rBTC mint or burn, the fee, then Synced."""
    transfer = {"from": ZERO, "to": user} if delta > 0 else {"from": user, "to": ZERO}
    return [
        event_log("rbtc_synth", SYNTH, "Transfer", tx, **transfer, amount=abs(delta)),
        event_log("fee_vault", VAULT, "Spent", tx, user=user, amount=fee, by=AGG),
        event_log(
            "oracle_aggregator",
            AGG,
            "Synced",
            tx,
            user=user,
            newBalanceSats=new,
            deltaSats=delta,
            feeWei=fee,
            height=0,
            timestamp=0,
        ),
    ]


def emergency_burn_logs(tx: str, user: str, burned: int) -> list[RawLog]:
    """The logs of an emergency burn: the burn, EmergencyBurn, then Synced to zero without a fee."""
    return [
        event_log("rbtc_synth", SYNTH, "Transfer", tx, **{"from": user, "to": ZERO, "amount": burned}),
        event_log(
            "oracle_aggregator", AGG, "EmergencyBurn", tx, user=user, burnedAmount=burned, reason="Insufficient fees"
        ),
        event_log(
            "oracle_aggregator",
            AGG,
            "Synced",
            tx,
            user=user,
            newBalanceSats=0,
            deltaSats=-burned,
            feeWei=0,
            height=0,
            timestamp=0,
        ),
    ]
