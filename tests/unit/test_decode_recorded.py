"""Decoding real node answers (tests/fixtures/rpc/protocol_events.json, written by tests/fixtures/record.py).

The expected events are derived here from what the recorded script did (its calls, senders, values) and the
protocol's rules (reference §3-4: which logs each call emits, in which order, with which values), never from the
decoder's output. The recorded headers are parsed and their logs blooms checked against the returned logs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eth_utils.crypto import keccak

from indexer.config import ABI_DIR, DEFAULT_ABI_FILES
from indexer.decode.decoder import LogDecoder
from indexer.fetch.fetcher import Header, bloom_bits, bloom_has
from indexer.records import DecodedLog, RawLog

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "rpc" / "protocol_events.json"
ZERO = "0x" + "00" * 20
AGGREGATOR_REASON = "Insufficient fees"
POOL_REASON = "Insufficient fees or balance went to zero"

# Every event the contracts can put in a log (reference §3.9: NeedsTopUp, RBTCSynth.Approval and ParticipantLeft
# never appear).
EMITTABLE = {
    ("oracle_aggregator", "Synced"),
    ("oracle_aggregator", "EmergencyBurn"),
    ("fee_vault", "Deposited"),
    ("fee_vault", "Spent"),
    ("fee_vault", "Withdrawn"),
    ("rbtc_synth", "Transfer"),
    ("vault_wrbtc", "Transfer"),
    ("vault_wrbtc", "Approval"),
    ("vault_wrbtc", "Wrapped"),
    ("vault_wrbtc", "Redeemed"),
    ("vault_wrbtc", "Slashed"),
    ("yield_scales_pool", "ParticipantJoined"),
    ("yield_scales_pool", "YieldCalculated"),
    ("yield_scales_pool", "YieldClaimed"),
    ("yield_scales_pool", "ScalesBalanceUpdated"),
    ("yield_scales_pool", "EmergencyBurnTriggered"),
    ("yield_scales_pool", "BalanceDisputed"),
}


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


@pytest.fixture(scope="module")
def decoder(recorded: dict[str, Any]) -> LogDecoder:
    return LogDecoder(
        (role, address, ABI_DIR / DEFAULT_ABI_FILES[role]) for role, address in recorded["contracts"].items()
    )


def raw_logs(recorded: dict[str, Any]) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = recorded["eth_getLogs"]["response"]["result"]
    return logs


def headers(recorded: dict[str, Any]) -> dict[int, Header]:
    return {int(n): Header.from_rpc(r["result"]) for n, r in recorded["eth_getBlockByNumber"]["responses"].items()}


def as_raw_log(raw: dict[str, Any]) -> RawLog:
    return RawLog(
        block_number=int(raw["blockNumber"], 16),
        block_hash=raw["blockHash"],
        block_timestamp=int(raw["blockTimestamp"], 16),
        tx_hash=raw["transactionHash"],
        tx_index=int(raw["transactionIndex"], 16),
        log_index=int(raw["logIndex"], 16),
        address=raw["address"].lower(),
        topics=raw["topics"],
        data=raw["data"],
    )


# --- the checking model: which logs each recorded call emits, from the protocol's rules ------------------------


@dataclass
class Protocol:
    """What the script's calls did to the protocol, followed call by call."""

    aggregator: str
    fee_policy: dict[str, int]
    last_sats: dict[str, int] = field(default_factory=dict)
    prepaid: dict[str, int] = field(default_factory=dict)
    rbtc: dict[str, int] = field(default_factory=dict)
    wrapped: dict[str, int] = field(default_factory=dict)
    contribution: dict[str, int] = field(default_factory=dict)
    peak_supply: int = 1
    total_usdt: int = 0

    def fee(self, delta: int) -> int:
        """Reference §4.3: a percentage of the minted value plus the fixed fee; the fixed fee alone on a burn."""
        p = self.fee_policy
        if delta > 0:
            return delta * p["wei_per_sat"] * p["pct_bps"] // 10_000 + p["fixed_wei"]
        return p["fixed_wei"]

    def sync(self, user: str, new: int, time: int) -> list[tuple[str, str, dict[str, Any]]]:
        """Reference §4.1: mint or burn the difference, pay the fee, log Synced; or, on a burn the prepaid
        balance cannot pay, burn everything as an emergency without a fee."""
        previous = self.last_sats.get(user, 0)
        delta = new - previous
        if delta == 0:
            return []
        fee = self.fee(delta)
        if delta < 0 and self.prepaid.get(user, 0) < fee:
            return self.emergency(user, time)
        assert self.prepaid.get(user, 0) >= fee, "the script only sends syncs that succeed"
        self.prepaid[user] -= fee
        self.last_sats[user] = new
        self.rbtc[user] = self.rbtc.get(user, 0) + delta
        transfer = {"from": ZERO, "to": user} if delta > 0 else {"from": user, "to": ZERO}
        return [
            ("rbtc_synth", "Transfer", {**transfer, "amount": abs(delta)}),
            ("fee_vault", "Spent", {"user": user, "amount": fee, "by": self.aggregator}),
            (
                "oracle_aggregator",
                "Synced",
                {
                    "user": user,
                    "newBalanceSats": new,
                    "deltaSats": delta,
                    "feeWei": fee,
                    "height": 0,
                    "timestamp": time,
                },
            ),
        ]

    def emergency(self, user: str, time: int) -> list[tuple[str, str, dict[str, Any]]]:
        """Reference §4.5: Transfer (burn of the whole balance) -> EmergencyBurn -> Synced(0, -previous, fee 0)."""
        previous = self.last_sats.get(user, 0)
        if previous == 0:
            return []
        self.last_sats[user] = 0
        self.rbtc[user] -= previous
        return [
            ("rbtc_synth", "Transfer", {"from": user, "to": ZERO, "amount": previous}),
            (
                "oracle_aggregator",
                "EmergencyBurn",
                {"user": user, "burnedAmount": previous, "reason": AGGREGATOR_REASON},
            ),
            (
                "oracle_aggregator",
                "Synced",
                {
                    "user": user,
                    "newBalanceSats": 0,
                    "deltaSats": -previous,
                    "feeWei": 0,
                    "height": 0,
                    "timestamp": time,
                },
            ),
        ]

    def scales(self, time: int) -> list[tuple[str, str, dict[str, Any]]]:
        """Reference §4.7: peak = max(peak, supply); rbtcScale = supply * 100 // peak; usdtScale = 100;
        rate = min(2000, usdtScale * rbtcScale * 500 // 10**6)."""
        supply = sum(self.rbtc.values())
        self.peak_supply = max(self.peak_supply, supply)
        rbtc_scale = supply * 100 // self.peak_supply
        rate = min(2000, 100 * rbtc_scale * 500 // 1_000_000)
        return [
            (
                "yield_scales_pool",
                "ScalesBalanceUpdated",
                {"usdtScale": 100, "rbtcScale": rbtc_scale, "timestamp": time},
            ),
            (
                "yield_scales_pool",
                "YieldCalculated",
                {"totalUSDTVirtual": self.total_usdt, "totalRBTCSupply": supply, "currentYieldRate": rate},
            ),
        ]

    def logs_of(
        self, call: dict[str, Any], time: int, observed: dict[str, Any]
    ) -> list[tuple[str, str, dict[str, Any]]]:
        name, args, sender, value = call["call"], call["args"], call["sender"], call["value"]
        if name in ("fee_vault.depositETH", "oracle_aggregator.registerAndPrepay"):
            self.prepaid[args["user"]] = self.prepaid.get(args["user"], 0) + value
            return [("fee_vault", "Deposited", {"user": args["user"], "amount": value})]
        if name == "fee_vault.depositMany":
            out = []
            for user, amount in zip(args["users"], args["amounts"], strict=True):
                self.prepaid[user] = self.prepaid.get(user, 0) + amount
                out.append(("fee_vault", "Deposited", {"user": user, "amount": amount}))
            return out
        if name == "fee_vault.withdrawUnused":
            amount, self.prepaid[sender] = self.prepaid.get(sender, 0), 0
            return [("fee_vault", "Withdrawn", {"user": sender, "amount": amount})]
        if name == "oracle_aggregator.sync":
            return self.sync(args["user"], args["newBalanceSats"], time)
        if name == "oracle_aggregator.syncBatch":
            return [
                entry
                for user, new in zip(args["users"], args["newBalances"], strict=True)
                for entry in self.sync(user, new, time)
            ]
        if name == "oracle_aggregator.executeEmergencyBurn":
            return self.emergency(args["user"], time)
        if name == "oracle_aggregator.resetEmergencyBurnStatus":
            return []
        if name == "vault_wrbtc.onWrap":
            self.wrapped[args["user"]] = self.wrapped.get(args["user"], 0) + args["amount"]
            return [
                ("vault_wrbtc", "Transfer", {"from": ZERO, "to": args["user"], "amount": args["amount"]}),
                ("vault_wrbtc", "Wrapped", {"user": args["user"], "amount": args["amount"]}),
            ]
        if name == "vault_wrbtc.transfer":
            return [("vault_wrbtc", "Transfer", {"from": sender, "to": args["to"], "amount": args["amount"]})]
        if name == "vault_wrbtc.approve":
            return [
                ("vault_wrbtc", "Approval", {"owner": sender, "spender": args["spender"], "amount": args["amount"]})
            ]
        if name == "vault_wrbtc.redeem":
            return [
                ("vault_wrbtc", "Transfer", {"from": sender, "to": ZERO, "amount": args["amount"]}),
                ("vault_wrbtc", "Redeemed", {"user": sender, "amount": args["amount"]}),
            ]
        if name == "vault_wrbtc.slashFromOracle":
            return [
                ("vault_wrbtc", "Transfer", {"from": args["user"], "to": ZERO, "amount": args["amount"]}),
                ("vault_wrbtc", "Slashed", {"user": args["user"], "amount": args["amount"]}),
            ]
        if name == "yield_scales_pool.joinAsBitcoinHolder":
            balance = self.rbtc.get(args["user"], 0)
            self.contribution[args["user"]] = balance
            joined = (
                "yield_scales_pool",
                "ParticipantJoined",
                {"user": args["user"], "participantType": 0, "amount": balance},
            )
            return [*self.scales(time), joined]
        if name == "yield_scales_pool.joinAsTrader":
            self.total_usdt += args["usdtAmount"]
            joined = (
                "yield_scales_pool",
                "ParticipantJoined",
                {"user": args["user"], "participantType": 1, "amount": args["usdtAmount"]},
            )
            return [*self.scales(time), joined]
        if name == "yield_scales_pool.claimYield":
            amount = observed["yield_claimed_by"][sender]
            return [("yield_scales_pool", "YieldClaimed", {"user": sender, "amount": amount})]
        if name == "yield_scales_pool.disputeBalance":
            return [
                (
                    "yield_scales_pool",
                    "BalanceDisputed",
                    {
                        "user": sender,
                        "reportedBalance": args["reportedBalance"],
                        "oracleBalance": args["oracleBalance"],
                    },
                )
            ]
        if name == "yield_scales_pool.updateRBTCContribution":
            old = self.contribution.get(args["user"], 0)
            self.contribution[args["user"]] = args["newContribution"]
            burn = []
            if args["newContribution"] == 0 and old > 0:
                burn = [
                    (
                        "yield_scales_pool",
                        "EmergencyBurnTriggered",
                        {"user": args["user"], "burnedAmount": old, "reason": POOL_REASON},
                    )
                ]
            return [*burn, *self.scales(time)]
        if name == "yield_scales_pool.emergencyBurn":
            self.contribution[args["user"]] = 0
            return [
                (
                    "yield_scales_pool",
                    "EmergencyBurnTriggered",
                    {"user": args["user"], "burnedAmount": args["amount"], "reason": POOL_REASON},
                )
            ]
        raise AssertionError(f"the checking model does not know {name}")


def expected_logs(recorded: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(tx hash, role, event, args with ints as decimal strings) for every log the script's calls emit, in order."""
    protocol = Protocol(recorded["contracts"]["oracle_aggregator"], recorded["observed"]["fee_policy"])
    times = {n: h.timestamp for n, h in headers(recorded).items()}
    out = []
    for call in recorded["intent"]:
        for role, event, args in protocol.logs_of(call, times[call["block_number"]], recorded["observed"]):
            plain = {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in args.items()}
            out.append((call["tx_hash"], role, event, plain))
    return out


# --- tests ---------------------------------------------------------------------------------------------------


def test_the_recording_holds_every_event_the_protocol_can_emit(recorded: dict[str, Any], decoder: LogDecoder) -> None:
    decoded = [decoder.decode_log(as_raw_log(raw)) for raw in raw_logs(recorded)]
    assert {(d["role"], d["event"]) for d in decoded} == EMITTABLE
    assert all(d["error"] is None for d in decoded)


def test_decoded_logs_are_what_the_script_did(recorded: dict[str, Any], decoder: LogDecoder) -> None:
    decoded = [decoder.decode_log(as_raw_log(raw)) for raw in raw_logs(recorded)]
    got = [(d["tx_hash"], d["role"], d["event"], d["args"]) for d in decoded]
    want = expected_logs(recorded)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"log {i}"


def test_each_call_lands_where_its_receipt_said(recorded: dict[str, Any]) -> None:
    logs = [as_raw_log(raw) for raw in raw_logs(recorded)]
    for call in recorded["intent"]:
        own = [lg for lg in logs if lg["tx_hash"] == call["tx_hash"]]
        assert len(own) == call["log_count"], call["call"]
        assert all(lg["block_number"] == call["block_number"] and lg["tx_index"] == call["tx_index"] for lg in own)


def test_decoding_keeps_the_raw_log_and_returns_a_new_record(recorded: dict[str, Any], decoder: LogDecoder) -> None:
    raw = as_raw_log(raw_logs(recorded)[0])
    before = dict(raw)
    decoded: DecodedLog = decoder.decode_log(raw)
    assert dict(raw) == before
    assert "event" not in raw
    assert {k: decoded[k] for k in before} == before  # type: ignore[literal-required]


def test_decoding_is_case_blind_on_addresses_and_topics(recorded: dict[str, Any], decoder: LogDecoder) -> None:
    raw = raw_logs(recorded)[0]
    shouted = decoder.decode(
        raw["address"].upper().replace("0X", "0x"), [t.upper().replace("0X", "0x") for t in raw["topics"]], raw["data"]
    )
    plain = decoder.decode(raw["address"], raw["topics"], raw["data"])
    assert shouted == plain
    assert plain.error is None


def test_a_log_with_its_data_cut_comes_back_undecodable(recorded: dict[str, Any], decoder: LogDecoder) -> None:
    synced = next(
        raw
        for raw in raw_logs(recorded)
        if raw["address"] == recorded["contracts"]["oracle_aggregator"] and len(raw["data"]) > 66
    )
    for cut in (synced["data"][:-64], synced["data"][:10], "0x"):
        log = as_raw_log({**synced, "data": cut})
        decoded = decoder.decode_log(log)
        assert decoded["error"], cut
        assert decoded["args"] is None
        assert decoded["role"] == "oracle_aggregator"
        assert decoded["block_number"] == log["block_number"]


def test_a_string_event_with_a_broken_offset_comes_back_undecodable(
    recorded: dict[str, Any], decoder: LogDecoder
) -> None:
    burn = next(raw for raw in raw_logs(recorded) if raw["topics"][0] == _topic0(recorded, decoder, "EmergencyBurn"))
    words = burn["data"][2:]
    broken = "0x" + words[:64] + "f" * 64 + words[128:]  # the string's offset word points far outside the data
    decoded = decoder.decode_log(as_raw_log({**burn, "data": broken}))
    assert decoded["error"]
    assert decoded["event"] == "EmergencyBurn"
    assert decoded["args"] is None


def _topic0(recorded: dict[str, Any], decoder: LogDecoder, event: str) -> str:
    for raw in raw_logs(recorded):
        if decoder.decode(raw["address"], raw["topics"], raw["data"]).event == event:
            return str(raw["topics"][0])
    raise AssertionError(f"no {event} recorded")


def test_unknown_emitters_and_topics_come_back_with_the_reason(recorded: dict[str, Any], decoder: LogDecoder) -> None:
    raw = raw_logs(recorded)[0]
    stranger = decoder.decode("0x" + "ab" * 20, raw["topics"], raw["data"])
    assert stranger.role is None and stranger.event is None and stranger.args is None
    assert "unwatched" in (stranger.error or "")
    other_topic = decoder.decode(raw["address"], ["0x" + "cd" * 32, *raw["topics"][1:]], raw["data"])
    assert other_topic.event is None and "unknown topic0" in (other_topic.error or "")
    anonymous = decoder.decode(raw["address"], [], raw["data"])
    assert anonymous.error and anonymous.args is None


def test_recorded_headers_parse(recorded: dict[str, Any]) -> None:
    for number, response in recorded["eth_getBlockByNumber"]["responses"].items():
        raw = response["result"]
        header = Header.from_rpc(raw)
        assert header.number == int(number)
        assert header.hash == raw["hash"]
        assert header.parent_hash == raw["parentHash"]
        assert header.timestamp == int(raw["timestamp"], 16)
        assert len(header.logs_bloom) == 256
        assert header.logs_bloom.hex() == raw["logsBloom"][2:]


def test_recorded_headers_form_one_chain(recorded: dict[str, Any]) -> None:
    by_number = headers(recorded)
    numbers = sorted(by_number)
    assert numbers == list(range(numbers[0], numbers[-1] + 1))
    for n in numbers[1:]:
        assert by_number[n].parent_hash == by_number[n - 1].hash


def test_every_log_agrees_with_its_blocks_header(recorded: dict[str, Any]) -> None:
    by_number = headers(recorded)
    for raw in raw_logs(recorded):
        header = by_number[int(raw["blockNumber"], 16)]
        assert raw["blockHash"] == header.hash
        assert int(raw["blockTimestamp"], 16) == header.timestamp


def test_every_logs_address_and_topic0_are_in_its_blocks_bloom(recorded: dict[str, Any]) -> None:
    by_number = headers(recorded)
    for raw in raw_logs(recorded):
        bloom = by_number[int(raw["blockNumber"], 16)].logs_bloom
        assert bloom_has(bloom, bloom_bits(bytes.fromhex(raw["address"][2:]))), raw["logIndex"]
        assert bloom_has(bloom, bloom_bits(bytes.fromhex(raw["topics"][0][2:]))), raw["logIndex"]
        for topic in raw["topics"][1:]:
            assert bloom_has(bloom, bloom_bits(bytes.fromhex(topic[2:])))


def test_blocks_without_logs_have_an_empty_bloom(recorded: dict[str, Any]) -> None:
    with_logs = {int(raw["blockNumber"], 16) for raw in raw_logs(recorded)}
    quiet = [h for n, h in headers(recorded).items() if n not in with_logs]
    assert quiet, "the recording has no block without logs"
    for header in quiet:
        assert header.logs_bloom == bytes(256), header.number
        for address in recorded["contracts"].values():
            assert not bloom_has(header.logs_bloom, bloom_bits(bytes.fromhex(address[2:])))


def test_a_bloom_bit_is_where_the_yellow_paper_puts_it() -> None:
    """Bit b of the 2048-bit bloom is bit (b % 8) of byte 255 - b // 8; each value sets the three bits named by
    the low 11 bits of the first three byte pairs of its keccak."""
    value = bytes.fromhex("ab" * 20)
    digest = keccak(value)
    expected = tuple(((digest[i] << 8) | digest[i + 1]) % 2048 for i in (0, 2, 4))
    assert bloom_bits(value) == expected
    bloom = bytearray(256)
    for bit in expected:
        bloom[255 - bit // 8] |= 1 << (bit % 8)
    assert bloom_has(bytes(bloom), expected)
    for bit in expected:
        missing = bytearray(bloom)
        missing[255 - bit // 8] &= ~(1 << (bit % 8)) & 0xFF
        assert not bloom_has(bytes(missing), expected)
