"""Decoding raw logs into named events, dispatched on (emitter, topic0).

Every event in the protocol's ABIs uses static words, `string` or `bytes`; those are decoded by slicing
the data directly, which is several times faster than a generic ABI decoder. Anything else falls back to
eth_abi. A log that does not decode is returned as an undecodable result with the reason, never raised.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.crypto import keccak

from indexer.errors import IndexerError
from indexer.records import DecodedLog, RawLog

WordDecoder = Callable[[bytes], str | bool]


class UndecodableLog(IndexerError):
    """A log whose topics or data do not match the event its topic0 names."""


def _canonical_type(param: dict[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in param.get("components", []))
        return f"({inner}){kind[5:]}"
    return kind


def event_signature(event: dict[str, Any]) -> str:
    """The canonical signature, e.g. `Transfer(address,address,uint256)`."""
    return f"{event['name']}({','.join(_canonical_type(p) for p in event['inputs'])})"


def topic0_of(event: dict[str, Any]) -> str:
    """The keccak-256 topic of an event ABI entry, 0x-prefixed lower-case hex."""
    return "0x" + keccak(text=event_signature(event)).hex()


def _uint(word: bytes) -> str:
    return str(int.from_bytes(word, "big"))


def _int(word: bytes) -> str:
    return str(int.from_bytes(word, "big", signed=True))


def _address(word: bytes) -> str:
    if any(word[:12]):
        raise UndecodableLog("address word has non-zero high bytes")
    return "0x" + word[12:].hex()


def _bool(word: bytes) -> bool:
    value = int.from_bytes(word, "big")
    if value > 1:
        raise UndecodableLog("bool word is neither 0 nor 1")
    return bool(value)


def _bytes_n(word: bytes) -> str:
    return "0x" + word.hex()


def _static_word_decoder(kind: str) -> WordDecoder | None:
    if kind.startswith("uint"):
        return _uint
    if kind.startswith("int"):
        return _int
    if kind == "address":
        return _address
    if kind == "bool":
        return _bool
    if kind.startswith("bytes") and kind != "bytes":
        return _bytes_n
    return None


@dataclass(frozen=True)
class EventSpec:
    """One event of one contract role: how to turn its topics and data into named arguments."""

    role: str
    name: str
    signature: str
    topic0: str
    indexed: tuple[tuple[str, str], ...]
    body: tuple[tuple[str, str], ...]
    # Decoding plans, built once: (name, word decoder) per topic and, when every body value is a static word,
    # per data word (None: the body has dynamic values and goes to eth_abi).
    _topic_plan: tuple[tuple[str, WordDecoder], ...] = field(init=False, repr=False, compare=False)
    _word_plan: tuple[tuple[str, WordDecoder], ...] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Indexed dynamic values are stored as their hash: shown as the 32-byte word in hex.
        topics = tuple((name, _static_word_decoder(kind) or _bytes_n) for name, kind in self.indexed)
        words = [(name, _static_word_decoder(kind)) for name, kind in self.body]
        plan = tuple((n, d) for n, d in words if d is not None)
        object.__setattr__(self, "_topic_plan", topics)
        object.__setattr__(self, "_word_plan", plan if len(plan) == len(words) else None)

    def decode(self, topics: Sequence[str], data: bytes) -> dict[str, Any]:
        """Decode one log; raise UndecodableLog when topics or data do not fit."""
        plan = self._topic_plan
        if len(topics) != 1 + len(plan):
            raise UndecodableLog(f"{self.name}: expected {1 + len(plan)} topics, got {len(topics)}")
        args: dict[str, Any] = {}
        for i, (name, decoder) in enumerate(plan, 1):
            args[name] = decoder(bytes.fromhex(topics[i][2:]))
        words = self._word_plan
        if words is None:
            args.update(self._decode_dynamic(data))
            return args
        if len(data) != 32 * len(words):
            raise UndecodableLog(f"{self.name}: data is {len(data)} bytes, expected {32 * len(words)}")
        offset = 0
        for name, decoder in words:
            args[name] = decoder(data[offset : offset + 32])
            offset += 32
        return args

    def _decode_dynamic(self, data: bytes) -> dict[str, Any]:
        try:
            values = abi_decode([k for _, k in self.body], data, strict=True)
        except Exception as exc:  # eth_abi raises several unrelated types
            raise UndecodableLog(f"{self.name}: {exc}") from None
        return {name: _plain(value) for (name, _), value in zip(self.body, values, strict=True)}


def _plain(value: object) -> object:
    """eth_abi values as JSON-safe data: ints as decimal strings, bytes as hex."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def load_event_specs(role: str, abi_path: Path) -> list[EventSpec]:
    """Every event of an ABI file, as EventSpecs for the given role."""
    abi = json.loads(abi_path.read_text())
    specs = []
    for entry in abi:
        if entry.get("type") != "event" or entry.get("anonymous"):
            continue
        params = [(p["name"], _canonical_type(p)) for p in entry["inputs"]]
        flags = [bool(p.get("indexed")) for p in entry["inputs"]]
        specs.append(
            EventSpec(
                role=role,
                name=entry["name"],
                signature=event_signature(entry),
                topic0=topic0_of(entry),
                indexed=tuple(p for p, f in zip(params, flags, strict=True) if f),
                body=tuple(p for p, f in zip(params, flags, strict=True) if not f),
            )
        )
    return specs


@dataclass(frozen=True)
class Decoded:
    """The outcome of decoding one log: an event name and arguments, or the reason it failed."""

    role: str | None
    event: str | None
    args: dict[str, Any] | None
    error: str | None


# Part of every decoder's fingerprint: raise it when a change to this module decodes any log differently, so
# that a rebuild decodes the logs stored before again.
DECODING_REVISION = 1


class LogDecoder:
    """Decodes logs of the watched contracts, choosing the event by emitter address and topic0."""

    def __init__(self, contracts: Iterable[tuple[str, str, Path]]):
        self._specs: dict[tuple[str, str], EventSpec] = {}
        self._roles: dict[str, str] = {}
        for role, address, abi_path in contracts:
            address = address.lower()
            self._roles[address] = role
            for spec in load_event_specs(role, abi_path):
                self._specs[(address, spec.topic0)] = spec
        described = sorted(
            (address, topic0, spec.role, spec.name, spec.signature, spec.indexed, spec.body)
            for (address, topic0), spec in self._specs.items()
        )
        self.fingerprint = hashlib.sha256(
            repr((DECODING_REVISION, sorted(self._roles.items()), described)).encode()
        ).hexdigest()[:16]
        """Equal for two decoders exactly when they decode every log alike (same roles, events and layouts)."""

    @property
    def roles(self) -> dict[str, str]:
        """Each watched address (lower-case) and its contract role."""
        return dict(self._roles)

    def topics0(self) -> set[str]:
        """The topic0 of every event of the watched contracts."""
        return {topic0 for _, topic0 in self._specs}

    def decode(self, address: str, topics: Sequence[str], data_hex: str) -> Decoded:
        """Decode one raw log; failures come back as a Decoded with `error` set."""
        return Decoded(*self._decode(address, topics, data_hex))

    def _decode(
        self, address: str, topics: Sequence[str], data_hex: str
    ) -> tuple[str | None, str | None, dict[str, Any] | None, str | None]:
        """(role, event, args, error) of one raw log."""
        address = address.lower()
        role = self._roles.get(address)
        if not topics:
            return role, None, None, "log has no topics (anonymous event)"
        spec = self._specs.get((address, topics[0].lower()))
        if spec is None:
            return role, None, None, f"unknown topic0 {topics[0]} for {role or 'unwatched'} {address}"
        try:
            data = bytes.fromhex(data_hex[2:] if data_hex.startswith("0x") else data_hex)
            return role, spec.name, spec.decode([t.lower() for t in topics], data), None
        except (UndecodableLog, ValueError) as exc:
            return role, spec.name, None, str(exc)

    def decode_log(self, raw: RawLog) -> DecodedLog:
        """A new record: the raw log with its role, event and arguments, or the reason it did not decode."""
        role, event, args, error = self._decode(raw["address"], raw["topics"], raw["data"])
        return {
            "block_number": raw["block_number"],
            "block_hash": raw["block_hash"],
            "block_timestamp": raw["block_timestamp"],
            "tx_hash": raw["tx_hash"],
            "tx_index": raw["tx_index"],
            "log_index": raw["log_index"],
            "address": raw["address"],
            "topics": raw["topics"],
            "data": raw["data"],
            "role": role,
            "event": event,
            "args": args,
            "error": error,
        }
