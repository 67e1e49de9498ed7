"""Multicall3 calldata and results, checked against eth_abi's encoder; the users-per-request control."""

from __future__ import annotations

import pytest
from eth_abi.abi import decode, encode

from indexer.verify.chain_state import AGGREGATE3, UsersPerRequest, decode_aggregate3, encode_aggregate3

CALLS = [
    ("0x" + "12" * 20, bytes.fromhex("70a08231") + bytes(12) + bytes.fromhex("ab" * 20)),
    ("0x" + "34" * 20, bytes.fromhex("18160ddd")),
    ("0x" + "56" * 20, b""),
]


def test_aggregate3_calldata_is_the_abi_encoding():
    want = AGGREGATE3 + encode(["(address,bool,bytes)[]"], [[(t, True, d) for t, d in CALLS]])
    assert encode_aggregate3(CALLS) == want
    assert encode_aggregate3([]) == AGGREGATE3 + encode(["(address,bool,bytes)[]"], [[]])


def test_aggregate3_results_decode_as_abi_does():
    results = [(True, (5).to_bytes(32, "big")), (False, b""), (True, bytes(range(70)))]
    data = encode(["(bool,bytes)[]"], [results])
    assert decode_aggregate3(data) == results == [tuple(r) for r in decode(["(bool,bytes)[]"], data)[0]]


def test_truncated_results_are_refused():
    data = encode(["(bool,bytes)[]"], [[(True, bytes(32)), (True, bytes(40))]])
    with pytest.raises(ValueError):
        decode_aggregate3(data[:-40])


def test_users_per_request_halves_on_refusal_and_grows_no_more_after_one():
    chunk = UsersPerRequest(250, 2000)
    for _ in range(2):
        chunk.succeeded(250)
    assert chunk.value == 500
    for _ in range(2):
        chunk.succeeded(500)
    assert chunk.value == 1000
    assert chunk.refused() and chunk.value == 500
    for _ in range(6):
        chunk.succeeded(chunk.value)
    assert chunk.value == 500
    one = UsersPerRequest(1, 10)
    assert not one.refused() and one.value == 1
