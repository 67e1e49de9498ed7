"""The upstream-compatible JSON routes (reference §5), served from the read tables.

Each route is a `Route`: which projections it reads (they decide the block and version it reports), how it
parses its parameters (bad input answers 400 before any read), how it reads one snapshot, and the body upstream
falls back to on an error. Upstream's type quirks are kept: which fields are strings and which numbers, bare arrays,
default values, and totals — here exact SQL aggregates over every row, never a sum over a capped page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from psycopg import sql

from indexer.serve.shapes import btc, js_now, js_time, normalise_address, now_ms, text
from indexer.serve.snapshot import Snapshot

BALANCES = "balances"
TRANSACTIONS = "transactions"
BURNS = "emergency_burns"
YIELD = "yield_scales_participants"
ORACLE = "oracle_operations_log"
ALL_PROJECTIONS = (BALANCES, TRANSACTIONS, BURNS, YIELD, ORACLE)
RECENT_SYNC_MS = 300_000


class BadInput(Exception):
    """A request parameter is missing or malformed: the route answers 400 with this body."""

    def __init__(self, body: Any):
        super().__init__(str(body))
        self.body = body


Params = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Settings:
    """What routes need from the configuration."""

    yield_scales_contract: str
    bitcoin_addresses_table: str | None
    bitcoin_addresses_present: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    projections: tuple[str, ...]
    parse: Callable[[dict[str, str]], Params]
    read: Callable[[Snapshot, Params, Settings], Awaitable[Any]]
    fallback: Callable[[Params], Any]
    methods: tuple[str, ...] = ("GET",)
    cacheable: bool = True
    summary: str = ""
    params: tuple[str, ...] = field(default=())


# -- parameters ---------------------------------------------------------------------------------------


def _address(query: dict[str, str], *keys: str, required: bool = True) -> str | None:
    raw = next((query[k] for k in keys if query.get(k)), None)
    if raw is None:
        if required:
            raise BadInput({"error": "Address parameter is required"})
        return None
    address = normalise_address(raw)
    if address is None:
        raise BadInput({"error": "Invalid address: expected 0x followed by 40 hex digits"})
    return address


def _int(query: dict[str, str], key: str, default: int, low: int, high: int | None) -> int:
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadInput({"error": f"{key} must be an integer"}) from None
    if value < low:
        raise BadInput({"error": f"{key} must be at least {low}"})
    if high is not None and value > high:
        raise BadInput({"error": f"{key} must be at most {high}"})
    return value


def address_only(query: dict[str, str]) -> Params:
    return {"address": _address(query, "address")}


def nothing(query: dict[str, str]) -> Params:
    return {}


def transactions_params(query: dict[str, str]) -> Params:
    return {
        "address": _address(query, "address", "userAddress"),
        "limit": _int(query, "limit", 10, 1, 100),
        "offset": _int(query, "offset", 0, 0, 1_000_000),
    }


def operations_params(query: dict[str, str]) -> Params:
    action = (query.get("filter") or "all").strip()
    if not action.replace("_", "").isalnum() or len(action) > 32:
        raise BadInput({"error": "filter must be 'all' or an action name such as MINT"})
    return {
        "limit": _int(query, "limit", 50, 1, 100),
        "offset": _int(query, "offset", 0, 0, 1_000_000),
        "filter": action,
    }


# -- balances ----------------------------------------------------------------------------------------


async def read_balance(snap: Snapshot, p: Params, s: Settings) -> Any:
    row = await snap.row("SELECT last_sats, last_sync_time FROM balances WHERE user_address = %s", (p["address"],))
    sats = row["last_sats"] if row else Decimal(0)
    mark = snap.block_of((BALANCES,))
    return {
        "success": True,
        "address": p["address"],
        "balance": text(sats),
        "oracleSats": sats,
        "btc": btc(sats),
        "lastUpdate": js_time(row["last_sync_time"]) if row and row["last_sync_time"] else js_now(),
        "source": "oracle_contract",
        "blockNumber": str(mark.block if mark else 0),
        "_timestamp": now_ms(),
        "_seed": snap.version,
        "_fresh": True,
        "_block": mark.block if mark else None,
    }


def balance_fallback(p: Params) -> Any:
    return {
        "success": False,
        "address": p.get("address"),
        "balance": "0",
        "oracleSats": 0,
        "btc": "0.00000000",
        "lastUpdate": js_now(),
        "source": "error_fallback",
        "blockNumber": "0",
        "_timestamp": now_ms(),
        "_seed": 0,
        "_fresh": False,
    }


# -- transactions ------------------------------------------------------------------------------------

TX_COLUMNS = (
    "tx_hash, block_number, block_timestamp, user_address, tx_type, amount, delta, fee_wei, bitcoin_address, "
    "gas_used, gas_price, status, metadata"
)


def transaction_json(r: dict[str, Any]) -> dict[str, Any]:
    """One transactions row as upstream's route maps it."""
    return {
        "tx_hash": r["tx_hash"],
        "block_number": r["block_number"],
        "block_timestamp": r["block_timestamp"],
        "user_address": r["user_address"],
        "tx_type": r["tx_type"],
        "amount": text(r["amount"]),
        "delta": text(r["delta"]),
        "fee_wei": text(r["fee_wei"], "0"),
        "bitcoin_address": r["bitcoin_address"],
        "gas_used": None if r["gas_used"] is None else int(r["gas_used"]),
        "gas_price": text(r["gas_price"]),
        "status": r["status"] or "confirmed",
        "metadata": r["metadata"] if r["metadata"] is not None else {},
    }


async def read_transactions(snap: Snapshot, p: Params, s: Settings) -> Any:
    rows = await snap.rows(
        f"SELECT {TX_COLUMNS} FROM transactions WHERE user_address = %s "
        "ORDER BY block_timestamp DESC, block_number DESC, log_index DESC LIMIT %s OFFSET %s",
        (p["address"], p["limit"], p["offset"]),
    )
    return [transaction_json(r) for r in rows]


# -- emergency burns ---------------------------------------------------------------------------------


async def read_emergency_burns(snap: Snapshot, p: Params, s: Settings) -> Any:
    burns = await snap.rows(
        "SELECT tx_hash || ':' || log_index AS id, user_address, burned_amount, reason, \"timestamp\", block_number, "
        'tx_hash, "timestamp" AS created_at FROM emergency_burns WHERE user_address = %s '
        'ORDER BY "timestamp" DESC, block_number DESC, log_index DESC',
        (p["address"],),
    )
    txs = await snap.rows(
        f"SELECT {TX_COLUMNS} FROM transactions WHERE user_address = %s AND is_emergency_burn "
        "ORDER BY block_timestamp DESC, block_number DESC, log_index DESC",
        (p["address"],),
    )
    total = await snap.row("SELECT coalesce(sum(burned_amount), 0) AS total FROM emergency_burns")
    return {
        "success": True,
        "data": {
            "userBurns": burns,
            "emergencyTransactions": [transaction_json(t) for t in txs],
            "totalSystemBurns": total["total"] if total else 0,
            "hasEmergencyBurns": bool(burns),
        },
        "timestamp": js_now(),
    }


def burns_fallback(p: Params) -> Any:
    return {
        "success": False,
        "error": "Failed to fetch emergency burns",
        "data": {"userBurns": [], "emergencyTransactions": [], "totalSystemBurns": 0, "hasEmergencyBurns": False},
        "timestamp": js_now(),
    }


# -- yield ----------------------------------------------------------------------------------------------

PARTICIPANT_COLUMNS = (
    "user_address, participant_type, loyalty_tier, is_active, virtual_usdt, rbtc_contributed, yield_claimed, "
    "yield_earned, joined_at, last_activity_at, is_disputed, updated_block"
)


async def _participant(snap: Snapshot, address: str) -> dict[str, Any] | None:
    return await snap.row(
        f"SELECT {PARTICIPANT_COLUMNS} FROM yield_scales_participants WHERE user_address = %s", (address,)
    )


async def _snapshot_balance(snap: Snapshot, address: str) -> Decimal | None:
    row = await snap.row(
        "SELECT rbtc_balance FROM balance_snapshots WHERE user_address = %s ORDER BY snapshot_timestamp DESC LIMIT 1",
        (address,),
    )
    return None if row is None else row["rbtc_balance"]


async def read_yield_status(snap: Snapshot, p: Params, s: Settings) -> Any:
    participant = await _participant(snap, p["address"])
    balance = await _snapshot_balance(snap, p["address"])
    stats = await snap.row(
        "SELECT count(*) AS total, count(*) FILTER (WHERE participant_type = 0) AS holders, "
        "count(*) FILTER (WHERE participant_type = 1) AS traders, "
        "count(*) FILTER (WHERE loyalty_tier = 0) AS bronze, count(*) FILTER (WHERE loyalty_tier = 1) AS silver, "
        "count(*) FILTER (WHERE loyalty_tier = 2) AS gold FROM yield_scales_participants"
    )
    assert stats is not None
    current = balance if balance is not None else 0
    return {
        "isParticipant": participant is not None,
        "isEligible": current > 0,
        "participantData": participant,
        "currentBalance": current,
        "systemStats": {
            "totalParticipants": stats["total"],
            "bitcoinHolders": stats["holders"],
            "traders": stats["traders"],
            "bronzeTier": stats["bronze"],
            "silverTier": stats["silver"],
            "goldTier": stats["gold"],
        },
        "yieldScalesContract": s.yield_scales_contract,
        "timestamp": js_now(),
    }


def yield_fallback(p: Params) -> Any:
    return {"error": "Failed to fetch yield status", "isParticipant": False, "isEligible": False}


async def read_participant(snap: Snapshot, p: Params, s: Settings) -> Any:
    participant = await _participant(snap, p["address"])
    if participant is not None:
        return {
            "isParticipant": True,
            "participantType": participant["participant_type"] or "bitcoin_holder",
            "yieldEarned": float(participant["yield_earned"]),
            "yieldClaimed": float(participant["yield_claimed"]),
            "joinedAt": participant["joined_at"],
            "participantCount": "encrypted",
        }
    balance = await _snapshot_balance(snap, p["address"])
    return {
        "isParticipant": False,
        "participantType": None,
        "yieldEarned": 0,
        "yieldClaimed": 0,
        "eligibleToJoin": balance is not None and balance > 0,
        "participantCount": "encrypted",
    }


def participant_fallback(p: Params) -> Any:
    return {"error": "Failed to fetch participant data"}


# -- proof of reserves, sync status, bitcoin addresses ----------------------------------------------------


async def read_proof_of_reserves(snap: Snapshot, p: Params, s: Settings) -> Any:
    totals = await snap.row(
        "SELECT coalesce(sum(rbtc_balance), 0) AS rbtc, coalesce(sum(last_sats), 0) AS sats FROM balance_snapshots"
    )
    assert totals is not None
    rbtc, sats = totals["rbtc"], totals["sats"]
    ratio = "100.00" if sats == 0 else format((Decimal(rbtc) / Decimal(sats) * 100).quantize(Decimal("0.01")), "f")
    return {
        "success": True,
        "data": {"latestProof": None, "currentTotals": {"totalRBTC": rbtc, "totalSats": sats, "backingRatio": ratio}},
        "timestamp": js_now(),
    }


def por_fallback(p: Params) -> Any:
    return {"success": False, "error": "Failed to fetch proof of reserves", "timestamp": js_now()}


async def read_sync_status(snap: Snapshot, p: Params, s: Settings) -> Any:
    row = await snap.row("SELECT last_sync_time FROM balances WHERE user_address = %s", (p["address"],))
    if row is None or row["last_sync_time"] is None:
        return {
            "synced": False,
            "lastSync": None,
            "syncAge": None,
            "isRecent": False,
            "status": "not_registered",
            "userRegistered": False,
        }
    age = int((datetime.now(UTC) - row["last_sync_time"]).total_seconds() * 1000)
    recent = age < RECENT_SYNC_MS
    return {
        "synced": True,
        "lastSync": js_time(row["last_sync_time"]),
        "syncAge": age,
        "isRecent": recent,
        "status": "active" if recent else "stale",
        "userRegistered": True,
    }


def sync_fallback(p: Params) -> Any:
    return {
        "synced": False,
        "lastSync": None,
        "syncAge": None,
        "isRecent": False,
        "status": "error",
        "userRegistered": False,
    }


async def read_bitcoin_addresses(snap: Snapshot, p: Params, s: Settings) -> Any:
    rows: list[dict[str, Any]] = []
    if s.bitcoin_addresses_table and s.bitcoin_addresses_present:
        rows = await snap.rows(
            sql.SQL("SELECT * FROM {} WHERE eth_address = %s ORDER BY created_at DESC").format(
                sql.Identifier(*s.bitcoin_addresses_table.split("."))
            ),
            (p["address"],),
        )
    return {"ethAddress": p["address"], "bitcoinAddresses": rows, "count": len(rows), "timestamp": js_now()}


def bitcoin_fallback(p: Params) -> Any:
    return {"ethAddress": p.get("address"), "bitcoinAddresses": [], "count": 0, "timestamp": js_now()}


# -- oracle operations -------------------------------------------------------------------------------------

OP_COLUMNS = 'id, "timestamp", action, consensus_reached, coalesce(cardinality(sources_used), 0) AS sources_count'
OP_STATS = (
    "SELECT count(*) AS total, count(*) FILTER (WHERE action = 'MINT') AS mints, "
    "count(*) FILTER (WHERE action = 'BURN') AS burns, count(*) FILTER (WHERE action = 'SYNC') AS syncs, "
    "count(*) FILTER (WHERE consensus_reached) AS agreed FROM oracle_operations_log"
)


def _rate(agreed: int, total: int) -> float:
    return round(agreed / total * 100, 2) if total else 0


async def read_operations(snap: Snapshot, p: Params, s: Settings) -> Any:
    where = sql.SQL("")
    args: list[Any] = []
    if p["filter"].lower() != "all":
        where = sql.SQL(" WHERE action = %s")
        args.append(p["filter"].upper())
    ops = await snap.rows(
        sql.SQL("SELECT " + OP_COLUMNS + " FROM oracle_operations_log")
        + where
        + sql.SQL(' ORDER BY "timestamp" DESC, block_number DESC, log_index DESC LIMIT %s OFFSET %s'),
        (*args, p["limit"], p["offset"]),
    )
    stats = await snap.row(OP_STATS)
    assert stats is not None
    return {
        "operations": [
            {
                "id": o["id"],
                "timestamp": o["timestamp"],
                "action": o["action"],
                "consensus_reached": o["consensus_reached"],
                "sources_count": o["sources_count"],
                "user_address": "encrypted",
                "amount": "encrypted",
                "tx_hash": "encrypted",
            }
            for o in ops
        ],
        "stats": {
            "total": stats["total"],
            "mints": stats["mints"],
            "burns": stats["burns"],
            "syncs": stats["syncs"],
            "consensus_rate": _rate(stats["agreed"], stats["total"]),
        },
        "pagination": {"limit": p["limit"], "offset": p["offset"], "total": 0, "hasMore": len(ops) == p["limit"]},
    }


def operations_fallback(p: Params) -> Any:
    return {"error": "Failed to fetch oracle operations"}


async def read_public_operations(snap: Snapshot, p: Params, s: Settings) -> Any:
    ops = await snap.rows(
        "SELECT " + OP_COLUMNS + " FROM oracle_operations_log "
        'ORDER BY "timestamp" DESC, block_number DESC, log_index DESC LIMIT 20'
    )
    stats = await snap.row(OP_STATS)
    assert stats is not None
    return {
        "operations": [
            {
                "action": o["action"],
                "timestamp": o["timestamp"],
                "consensus_reached": o["consensus_reached"],
                "sources_used": o["sources_count"],
                "user_address": "encrypted",
                "amount_sats": None,
                "tx_hash": None,
            }
            for o in ops
        ],
        "stats": {
            "total_operations": stats["total"],
            "active_users": "encrypted",
            "consensus_rate": _rate(stats["agreed"], stats["total"]),
            "uptime": 99.9,
        },
    }


ROUTES: tuple[Route, ...] = (
    Route(
        "/api/realtime/balances",
        (BALANCES,),
        address_only,
        read_balance,
        balance_fallback,
        summary="A user's rBTC balance (lastSats) as the tables reflect it",
        params=("address",),
    ),
    Route(
        "/api/realtime/transactions",
        (TRANSACTIONS,),
        transactions_params,
        read_transactions,
        lambda p: [],
        methods=("GET", "POST"),
        summary="A user's transactions, newest first (bare array)",
        params=("address", "limit", "offset"),
    ),
    Route(
        "/api/realtime/emergency-burns",
        (BURNS, TRANSACTIONS),
        address_only,
        read_emergency_burns,
        burns_fallback,
        summary="A user's emergency burns and the system total",
        params=("address",),
    ),
    Route(
        "/api/realtime/yield-status",
        (YIELD, BALANCES),
        address_only,
        read_yield_status,
        yield_fallback,
        summary="YieldScales participation, eligibility and system counts",
        params=("address",),
    ),
    Route(
        "/api/realtime/sync-status",
        (BALANCES,),
        address_only,
        read_sync_status,
        sync_fallback,
        cacheable=False,
        summary="When the user's balance was last synced on chain",
        params=("address",),
    ),
    Route(
        "/api/realtime/proof-of-reserves",
        (BALANCES,),
        nothing,
        read_proof_of_reserves,
        por_fallback,
        summary="Exact totals of rBTC and lastSats over every user",
    ),
    Route(
        "/api/realtime/bitcoin-addresses",
        (),
        address_only,
        read_bitcoin_addresses,
        bitcoin_fallback,
        summary="The user's Bitcoin addresses (an off-chain table, when configured)",
        params=("address",),
    ),
    Route(
        "/api/yield-scales/participant",
        (YIELD, BALANCES),
        address_only,
        read_participant,
        participant_fallback,
        summary="One YieldScales participant",
        params=("address",),
    ),
    Route(
        "/api/oracle/operations",
        (ORACLE,),
        operations_params,
        read_operations,
        operations_fallback,
        summary="Oracle operations seen on chain, newest first",
        params=("limit", "offset", "filter"),
    ),
    Route(
        "/api/oracle/public-operations",
        (ORACLE,),
        nothing,
        read_public_operations,
        operations_fallback,
        summary="The latest 20 oracle operations and totals",
    ),
)
