"""Cutting a fetched range into stored events: never inside a block, contiguous from the range's first block to its
last, every log exactly once and in chain order, each piece about `limit` logs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.follow.follower import MAX_LOGS_PER_EVENT, split_by_block
from indexer.records import DecodedLog


def make_log(block: int, index: int) -> DecodedLog:
    return DecodedLog(
        block_number=block,
        block_hash=f"0x{block:064x}",
        block_timestamp=1_700_000_000 + block,
        tx_hash=f"0x{block:032x}{index:032x}",
        tx_index=index // 3,
        log_index=index,
        address="0x" + "11" * 20,
        topics=["0x" + "22" * 32],
        data="0x",
        role="fee_vault",
        event="Deposited",
        args={"user": "0x" + "33" * 20, "amount": str(index + 1)},
        error=None,
    )


def logs_of(counts: dict[int, int]) -> list[DecodedLog]:
    return [make_log(block, i) for block in sorted(counts) for i in range(counts[block])]


def check_pieces(
    pieces: list[tuple[int, int, list[DecodedLog]]], logs: list[DecodedLog], from_block: int, to_block: int, limit: int
) -> None:
    """The rules every cut must keep, stated on their own."""
    if not logs:
        assert pieces == []
        return
    assert pieces[0][0] == from_block
    assert pieces[-1][1] == to_block
    for (_, last, _), (first, _, _) in zip(pieces, pieces[1:], strict=False):
        assert first == last + 1, "pieces leave a gap or overlap"
    flattened = [entry for _, _, chunk in pieces for entry in chunk]
    assert [id(e) for e in flattened] == [id(e) for e in logs], "a log is lost, repeated or moved"
    for first, last, chunk in pieces:
        assert first <= last
        assert chunk, "an empty piece"
        assert all(first <= e["block_number"] <= last for e in chunk)
        # Without the logs of its last block, a piece is below the limit (a block is never cut).
        last_block = chunk[-1]["block_number"]
        assert sum(1 for e in chunk if e["block_number"] != last_block) < limit
    blocks_by_piece = [{e["block_number"] for e in chunk} for _, _, chunk in pieces]
    for i, blocks in enumerate(blocks_by_piece):
        for other in blocks_by_piece[i + 1 :]:
            assert not blocks & other, "a block is split across pieces"


def test_no_logs_gives_no_pieces() -> None:
    assert split_by_block([], 10, 20) == []


def test_few_logs_make_one_piece_covering_the_whole_range() -> None:
    logs = logs_of({12: 2, 15: 1})
    assert split_by_block(logs, 10, 20, limit=10) == [(10, 20, logs)]


def test_a_cut_falls_between_blocks_once_the_limit_is_reached() -> None:
    logs = logs_of({10: 2, 11: 2, 13: 1, 14: 3})
    pieces = split_by_block(logs, 10, 19, limit=3)
    assert [(first, last, [(e["block_number"], e["log_index"]) for e in chunk]) for first, last, chunk in pieces] == [
        (10, 12, [(10, 0), (10, 1), (11, 0), (11, 1)]),
        (13, 19, [(13, 0), (14, 0), (14, 1), (14, 2)]),
    ]
    check_pieces(pieces, logs, 10, 19, 3)


def test_a_block_larger_than_the_limit_stays_whole() -> None:
    logs = logs_of({5: 7, 6: 1})
    pieces = split_by_block(logs, 5, 6, limit=2)
    assert [(first, last, len(chunk)) for first, last, chunk in pieces] == [(5, 5, 7), (6, 6, 1)]
    check_pieces(pieces, logs, 5, 6, 2)


def test_the_default_limit_is_the_stored_event_size() -> None:
    logs = logs_of({1: MAX_LOGS_PER_EVENT, 2: 1})
    pieces = split_by_block(logs, 1, 2)
    assert [(first, last, len(chunk)) for first, last, chunk in pieces] == [(1, 1, MAX_LOGS_PER_EVENT), (2, 2, 1)]


@settings(max_examples=150, deadline=None)
@given(
    from_block=st.integers(min_value=0, max_value=20_000_000),
    counts=st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=40),
    tail=st.integers(min_value=0, max_value=5),
    limit=st.integers(min_value=1, max_value=12),
)
def test_any_range_is_cut_by_the_rules(from_block: int, counts: list[int], tail: int, limit: int) -> None:
    per_block = {from_block + i: n for i, n in enumerate(counts) if n}
    to_block = from_block + len(counts) - 1 + tail
    logs = logs_of(per_block)
    pieces = split_by_block(logs, from_block, to_block, limit)
    check_pieces(pieces, logs, from_block, to_block, limit)


def test_the_input_list_is_not_changed() -> None:
    logs = logs_of({3: 4, 4: 4})
    before = [dict(e) for e in logs]
    split_by_block(logs, 3, 4, limit=2)
    assert [dict(e) for e in logs] == before
