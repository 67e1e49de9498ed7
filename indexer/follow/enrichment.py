"""Facts the logs do not carry, fetched by the follower and stored with the block they describe (design §3.10).

- Receipts: every log gets a `tx` record (sender, `to` and its watched role, gas used, effective gas price,
  status) from its transaction's receipt.
- Calldata: a YieldScalesPool transaction behind a `ScalesBalanceUpdated` that is no join is decoded; a direct
  `updateRBTCContribution(user, amount)` call (selector 0x8251c97f) becomes a `ContributionUpdated`
  observation at that log's position.
- Dispute state: `resolveDispute` emits nothing, so for every user with an open dispute the pool's
  `isDisputed(address)` is read by eth_call at the range's last block. A node that serves that state (an
  archive node, or any node for the last `state_window` blocks) answers; a full node that pruned it does not,
  and the disputes stay open until a range recent enough is read. When it turned false, the first block where
  it is false is found by bisection (down to the oldest block the node still serves) and a
  `DisputeStateObserved` observation is stored at the end of that block: the earliest block at which the
  closing could be seen, not necessarily the resolving transaction's.

Observations are records shaped like decoded logs (role, event, args, block, position) with `source` naming
where they came from, so projections fold them like logs and a rebuild needs no RPC.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog

from indexer.chain.rpc import RpcClient, RpcError, StatePruned
from indexer.fetch.fetcher import FetchedRange, Header, InconsistentResponse
from indexer.fetch.receipts import Receipt
from indexer.records import DecodedLog, Observation, TxFacts
from indexer.store import events as ev
from indexer.store.event_store import EventStore

log = structlog.get_logger("enrichment")

UPDATE_CONTRIBUTION_SELECTOR = "0x8251c97f"
IS_DISPUTED_SELECTOR = "0x8ae8a4d2"
POOL_ROLE = "yield_scales_pool"
END_OF_BLOCK = 2**31 - 1  # position of an observation that describes a whole block's end state


def tx_record(receipt: Receipt, roles: dict[str, str]) -> TxFacts:
    """What a log keeps of its transaction's receipt (wei and gas as decimal strings)."""
    return {
        "from": receipt.sender,
        "to": receipt.to,
        "to_role": roles.get(receipt.to) if receipt.to else None,
        "gas_used": str(receipt.gas_used),
        "gas_price": str(receipt.effective_gas_price) if receipt.effective_gas_price is not None else None,
        "status": receipt.status,
    }


def observation(
    *,
    block_number: int,
    block_hash: str,
    block_timestamp: int,
    address: str,
    event: str,
    args: dict[str, Any],
    source: str,
    tx_hash: str | None = None,
    tx_index: int | None = None,
    log_index: int = END_OF_BLOCK,
) -> Observation:
    """An observed fact shaped like a decoded log."""
    return {
        "block_number": block_number,
        "block_hash": block_hash,
        "block_timestamp": block_timestamp,
        "tx_hash": tx_hash,
        "tx_index": tx_index,
        "log_index": log_index,
        "address": address,
        "topics": [],
        "data": "0x",
        "role": POOL_ROLE,
        "event": event,
        "args": args,
        "error": None,
        "source": source,
    }


class Enricher:
    """Adds receipt facts to a range's decoded logs and returns the range's observations."""

    def __init__(
        self,
        rpc: RpcClient,
        roles: dict[str, str],
        *,
        receipts: bool = True,
        calldata: bool = True,
        disputes: bool = True,
        state_window: int = 64,
    ):
        """`roles` maps each watched address (lower-case) to its contract role."""
        self.rpc = rpc
        self.roles = {a.lower(): r for a, r in roles.items()}
        self.receipts = receipts
        self.calldata = calldata
        self.disputes = disputes and any(r == POOL_ROLE for r in self.roles.values())
        self.state_window = state_window
        self.open_disputes: dict[str, str] | None = None  # user -> pool address; None until loaded
        # Set by the first StatePruned answer below the window: the node is a full node, and state reads older
        # than the window are not tried again (a backfill would otherwise pay a refused call per range).
        self.prunes_old_state = False

    # -- public -------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget what is known of open disputes (after a revert); it is reloaded from the store."""
        self.open_disputes = None

    def enrich(
        self, fetched: FetchedRange, logs: list[DecodedLog], store: EventStore, chain_id: int, head: int
    ) -> tuple[list[DecodedLog], list[Observation]]:
        """The range's decoded logs as new records with their `tx` facts, and the observations of the range."""
        if self.receipts:
            logs = self._with_receipts(fetched, logs)
        observed: list[Observation] = []
        if self.calldata:
            observed.extend(self._contribution_updates(fetched, logs))
        if self.disputes:
            if self.open_disputes is None:
                self.open_disputes = load_open_disputes(store, chain_id)
            observed.extend(self._dispute_states(fetched, logs, head))
        return logs, sorted(observed, key=lambda o: (o["block_number"], o["log_index"]))

    # -- receipts -----------------------------------------------------------------------------------

    def _with_receipts(self, fetched: FetchedRange, logs: list[DecodedLog]) -> list[DecodedLog]:
        # One record per transaction, shared by its logs (a batch transaction emits dozens).
        facts = {r.tx_hash: tx_record(r, self.roles) for receipts in fetched.receipts.values() for r in receipts}
        out: list[DecodedLog] = []
        for lg in logs:
            tx = facts.get(lg["tx_hash"].lower())
            if tx is None:
                raise InconsistentResponse(f"no receipt for {lg['tx_hash']} of block {lg['block_number']}")
            out.append({**lg, "tx": tx})
        return out

    # -- calldata -----------------------------------------------------------------------------------

    def _contribution_updates(self, fetched: FetchedRange, logs: list[DecodedLog]) -> list[Observation]:
        joins = {lg["tx_hash"] for lg in logs if lg["role"] == POOL_ROLE and lg["event"] == "ParticipantJoined"}
        candidates = [
            lg
            for lg in logs
            if lg["role"] == POOL_ROLE and lg["event"] == "ScalesBalanceUpdated" and lg["tx_hash"] not in joins
        ]
        if not candidates:
            return []
        txs = self.rpc.batch([("eth_getTransactionByHash", [lg["tx_hash"]]) for lg in candidates])
        out = []
        for lg, tx in zip(candidates, txs, strict=True):
            if tx is None or (tx.get("blockHash") or "").lower() != lg["block_hash"].lower():
                raise InconsistentResponse(f"transaction {lg['tx_hash']} is not in block {lg['block_hash']}")
            data = (tx.get("input") or "0x").lower()
            if (tx.get("to") or "").lower() != lg["address"] or not data.startswith(UPDATE_CONTRIBUTION_SELECTOR):
                log.warning(
                    "pool scales update without a direct updateRBTCContribution call; contribution not observed",
                    tx=lg["tx_hash"],
                    block=lg["block_number"],
                )
                continue
            body = bytes.fromhex(data[10:])
            if len(body) != 64 or any(body[:12]):
                log.warning("undecodable updateRBTCContribution calldata", tx=lg["tx_hash"])
                continue
            out.append(
                observation(
                    block_number=lg["block_number"],
                    block_hash=lg["block_hash"],
                    block_timestamp=_block_time(lg),
                    address=lg["address"],
                    event="ContributionUpdated",
                    args={"user": "0x" + body[12:32].hex(), "newContribution": str(int.from_bytes(body[32:], "big"))},
                    source="calldata",
                    tx_hash=lg["tx_hash"],
                    tx_index=lg["tx_index"],
                    log_index=lg["log_index"],
                )
            )
        return out

    # -- disputes -----------------------------------------------------------------------------------

    def _dispute_states(self, fetched: FetchedRange, logs: list[DecodedLog], head: int) -> list[Observation]:
        assert self.open_disputes is not None
        filed: dict[str, tuple[int, str]] = {}  # user -> (block of the last filing in the range, pool)
        for lg in logs:
            if lg["role"] == POOL_ROLE and lg["event"] == "BalanceDisputed" and lg["args"]:
                filed[lg["args"]["user"]] = (lg["block_number"], lg["address"])
        candidates: dict[str, tuple[int, str]] = {
            u: (fetched.from_block - 1, pool) for u, pool in self.open_disputes.items()
        }
        candidates.update(filed)
        if not candidates:
            return []
        end = fetched.to_block
        oldest_state = head - self.state_window
        if self.prunes_old_state and end < oldest_state:
            self.open_disputes.update({u: pool for u, (_, pool) in filed.items()})
            return []  # the node has no state this old: checked once the follower is within the window
        users = sorted(candidates)
        try:
            states = self._is_disputed([(candidates[u][1], u) for u in users], end)
        except RpcError as exc:
            if "revert" not in str(exc).lower():
                self.open_disputes.update({u: pool for u, (_, pool) in filed.items()})
                if isinstance(exc, StatePruned) and end < oldest_state:
                    self.prunes_old_state = True
                    log.info(
                        "the node keeps no state this old; open disputes are read within its state window",
                        block=end,
                        state_window=self.state_window,
                    )
                else:
                    log.warning(
                        "isDisputed not answered; disputes stay open until a later range",
                        block=end,
                        error=str(exc)[:200],
                    )
                return []
            # A pool that does not answer isDisputed would stall the follower for ever: stop asking, loudly.
            log.error(
                "the pool does not answer isDisputed(address); dispute resolutions will not be observed",
                error=str(exc)[:200],
                block=end,
            )
            self.disputes = False
            return []
        out = []
        for user, disputed in zip(users, states, strict=True):
            low, pool = candidates[user]
            if disputed:
                self.open_disputes[user] = pool
                continue
            self.open_disputes.pop(user, None)
            block = None
            if not (self.prunes_old_state and low < oldest_state):
                block = self._first_undisputed(pool, user, low, end, filed_at_low=user in filed)
            if block is None and low < oldest_state < end:
                # The node has no state that old: place it within the window it must serve.
                block = self._first_undisputed(pool, user, oldest_state, end, filed_at_low=True)
            if block is None:
                log.info("no state to place a dispute resolution exactly; using the range end", user=user, block=end)
                block = end
            header = fetched.headers.get(block) or self._header(block)
            out.append(
                observation(
                    block_number=block,
                    block_hash=header.hash,
                    block_timestamp=header.timestamp,
                    address=pool,
                    event="DisputeStateObserved",
                    args={"user": user, "disputed": False},
                    source="eth_call",
                )
            )
        return out

    def _is_disputed(self, calls: list[tuple[str, str]], block: int) -> list[bool]:
        answers = self.rpc.batch(
            [
                ("eth_call", [{"to": pool, "data": IS_DISPUTED_SELECTOR + user[2:].rjust(64, "0")}, hex(block)])
                for pool, user in calls
            ],
        )
        out = []
        for answer in answers:
            if not isinstance(answer, str) or len(answer) != 66:
                raise InconsistentResponse(f"isDisputed answered {str(answer)[:80]!r} at block {block}")
            out.append(int(answer, 16) != 0)
        return out

    def _first_undisputed(self, pool: str, user: str, low: int, high: int, *, filed_at_low: bool) -> int | None:
        """The first block where the dispute is closed: in (low, high] when it was open at `low`; `low` itself
        when it is closed there already (`filed_at_low`: it was filed, or first probed, in that block). None if
        the node has no state that old."""
        try:
            if filed_at_low and not self._is_disputed([(pool, user)], low)[0]:
                return low
            while high - low > 1:
                middle = (low + high) // 2
                if self._is_disputed([(pool, user)], middle)[0]:
                    low = middle
                else:
                    high = middle
        except RpcError as exc:
            log.debug("isDisputed not answered while bisecting", low=low, high=high, error=str(exc)[:200])
            return None
        return high

    def _header(self, number: int) -> Header:
        raw = self.rpc.call("eth_getBlockByNumber", [hex(number), False])
        if raw is None:
            raise InconsistentResponse(f"node does not have block {number}")
        return Header.from_rpc(raw)


def load_open_disputes(store: EventStore, chain_id: int) -> dict[str, str]:
    """Users whose dispute is open on the stored canonical chain (user -> pool), from filings and observations."""
    history: dict[str, list[tuple[int, bool, str]]] = {}
    with store.datastore.transaction(commit=False) as curs:
        curs.execute(
            f"SELECT topic, state FROM {store.schema}.stored_events WHERE originator_id = %s AND (topic = %s OR "
            "position('BalanceDisputed' IN convert_from(state, 'UTF8')) > 0 OR "
            "position('DisputeStateObserved' IN convert_from(state, 'UTF8')) > 0) ORDER BY originator_version",
            (ev.stream_id(chain_id), ev.BLOCKS_REVERTED),
        )
        rows = curs.fetchall()
    for row in rows:
        event = ev.decode(row["topic"], bytes(row["state"]))
        if isinstance(event, ev.BlocksReverted):
            for user in history:
                history[user] = [h for h in history[user] if h[0] < event.from_block]
        elif isinstance(event, ev.LogsIngested):
            for item in _dispute_facts(event.logs, event.observations):
                history.setdefault(item[0], []).append(item[1:])
    return {user: facts[-1][2] for user, facts in history.items() if facts and facts[-1][1]}


def _block_time(lg: DecodedLog) -> int:
    """A fetched log's block time (the fetcher fills it from the log or its header before anything else runs)."""
    if lg["block_timestamp"] is None:
        raise InconsistentResponse(f"log of block {lg['block_number']} has no block time")
    return lg["block_timestamp"]


def _dispute_facts(*sources: Iterable[DecodedLog | Observation]) -> list[tuple[str, int, bool, str]]:
    """(user, block, disputed, pool) of filings and observed states, in chain order."""
    facts = []
    for source in sources:
        for lg in source:
            args = lg["args"]
            if lg["role"] != POOL_ROLE or not args:
                continue
            if lg["event"] == "BalanceDisputed":
                state = True
            elif lg["event"] == "DisputeStateObserved":
                state = bool(args["disputed"])
            else:
                continue
            facts.append((lg["block_number"], lg["log_index"], args["user"], state, lg["address"]))
    facts.sort(key=lambda f: (f[0], f[1]))
    return [(user, block, state, pool) for block, _, user, state, pool in facts]
