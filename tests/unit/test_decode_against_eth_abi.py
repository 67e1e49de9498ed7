"""The decoder's own word slicing agrees with eth_abi, the reference ABI codec, on every event of the protocol.

Values are drawn at random for each event's parameters, encoded with eth_abi (topics one value each, the data as
one tuple), decoded by LogDecoder, and compared with what eth_abi decodes from the same bytes (ints as decimal
strings, addresses lower-case, as the read tables keep them). Words that do not fit their type must come back
undecodable, never as a value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.decode.decoder import LogDecoder

ABI_DIR = Path(__file__).resolve().parents[2] / "abi"
ADDRESS = "0x" + "11" * 20
ZERO_ADDRESS = "0x" + "00" * 20


def _events() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(ABI_DIR.glob("*.json")):
        for entry in json.loads(path.read_text()):
            if entry.get("type") == "event" and not entry.get("anonymous"):
                out.append((path.name, entry))
    return out


EVENTS = _events()


def _value(kind: str) -> st.SearchStrategy[Any]:
    if kind.startswith("uint"):
        return st.integers(0, 2 ** int(kind[4:] or 256) - 1)
    if kind.startswith("int"):
        bits = int(kind[3:] or 256)
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if kind == "address":
        return st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
    if kind == "bool":
        return st.booleans()
    if kind == "string":
        return st.text(max_size=80)
    raise AssertionError(f"no strategy for {kind}")


def _plain(kind: str, value: Any) -> Any:
    if kind == "address":
        return str(value).lower()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    return value


def _signature(entry: dict[str, Any]) -> str:
    return f"{entry['name']}({','.join(p['type'] for p in entry['inputs'])})"


@pytest.mark.parametrize(("file", "entry"), EVENTS, ids=[f"{f}:{e['name']}" for f, e in EVENTS])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_event_decodes_as_eth_abi_decodes_it(file: str, entry: dict[str, Any], data: st.DataObject) -> None:
    decoder = LogDecoder([("role", ADDRESS, ABI_DIR / file)])
    values = [data.draw(_value(p["type"]), label=p["name"]) for p in entry["inputs"]]
    indexed = [(p, v) for p, v in zip(entry["inputs"], values, strict=True) if p.get("indexed")]
    body = [(p, v) for p, v in zip(entry["inputs"], values, strict=True) if not p.get("indexed")]
    topics = ["0x" + keccak(text=_signature(entry)).hex()]
    topics += ["0x" + abi_encode([p["type"]], [v]).hex() for p, v in indexed]
    encoded = abi_encode([p["type"] for p, _ in body], [v for _, v in body])

    decoded = decoder.decode(ADDRESS, topics, "0x" + encoded.hex())

    expected = {
        p["name"]: _plain(p["type"], abi_decode([p["type"]], bytes.fromhex(t[2:]))[0])
        for (p, _), t in zip(indexed, topics[1:], strict=True)
    }
    reference = abi_decode([p["type"] for p, _ in body], encoded)
    expected.update({p["name"]: _plain(p["type"], v) for (p, _), v in zip(body, reference, strict=True)})
    assert decoded.error is None
    assert decoded.event == entry["name"]
    assert decoded.args == expected


@pytest.mark.parametrize(("file", "entry"), EVENTS, ids=[f"{f}:{e['name']}" for f, e in EVENTS])
def test_words_that_do_not_fit_their_type_are_undecodable(file: str, entry: dict[str, Any]) -> None:
    decoder = LogDecoder([("role", ADDRESS, ABI_DIR / file)])
    topic0 = "0x" + keccak(text=_signature(entry)).hex()
    indexed = [p for p in entry["inputs"] if p.get("indexed")]
    body = [p for p in entry["inputs"] if not p.get("indexed")]
    topics = [topic0] + ["0x" + "00" * 32 for _ in indexed]
    static = all(p["type"] != "string" for p in body)
    zeros = ["" if p["type"] == "string" else 0 for p in body]
    zeros = [ZERO_ADDRESS if p["type"] == "address" else z for p, z in zip(body, zeros, strict=True)]
    good = "0x" + abi_encode([p["type"] for p in body], zeros).hex()  # a body that decodes
    assert decoder.decode(ADDRESS, topics, good).error is None
    assert decoder.decode(ADDRESS, topics[:-1] if indexed else [*topics, topics[0]], good).error is not None
    if static:
        assert decoder.decode(ADDRESS, topics, good + "00").error is not None  # one byte too many
    dirty_address = "0x" + "ff" * 12 + "11" * 20  # an address word with non-zero high bytes
    for i, p in enumerate(indexed, 1):
        if p["type"] == "address":
            bad = list(topics)
            bad[i] = dirty_address
            assert decoder.decode(ADDRESS, bad, good).error is not None
    if static:
        for i, p in enumerate(body):
            if p["type"] == "address":
                words = [good[2 + 64 * j : 2 + 64 * (j + 1)] for j in range(len(body))]
                words[i] = dirty_address[2:]
                assert decoder.decode(ADDRESS, topics, "0x" + "".join(words)).error is not None
