"""The adaptive eth_getLogs range: shrinks on refusals (halving, or to the node's hint), never below one block,
grows back after successes up to the operator's cap, and shrinks when a range carried too many logs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.fetch.fetcher import TARGET_LOGS, AdaptiveSpan


def test_the_initial_span_is_capped_by_the_maximum_and_at_least_one() -> None:
    assert AdaptiveSpan(100, 2000).value == 100
    assert AdaptiveSpan(5000, 2000).value == 2000
    assert AdaptiveSpan(0, 2000).value == 1
    assert AdaptiveSpan(-3, 2000).value == 1


def test_shrink_without_a_hint_halves() -> None:
    span = AdaptiveSpan(1000, 2000)
    span.shrink(None)
    assert span.value == 500
    span.shrink(None)
    assert span.value == 250
    span.shrink(None)
    assert span.value == 125
    span.shrink(None)
    assert span.value == 62


def test_shrink_takes_a_smaller_hint() -> None:
    span = AdaptiveSpan(1000, 2000)
    span.shrink(37)
    assert span.value == 37


def test_shrink_halves_when_the_hint_is_larger_than_half() -> None:
    span = AdaptiveSpan(1000, 2000)
    span.shrink(800)
    assert span.value == 500  # the smaller of half the span and the hint


def test_shrink_never_goes_below_one_block() -> None:
    span = AdaptiveSpan(3, 10)
    for _ in range(5):
        span.shrink(None)
        assert span.value >= 1
    assert span.value == 1
    span.shrink(0)
    assert span.value == 1
    span.shrink(1)
    assert span.value == 1


def test_grows_back_after_three_full_size_successes() -> None:
    span = AdaptiveSpan(100, 2000)
    span.succeeded(100, 0)
    span.succeeded(100, 0)
    assert span.value == 100
    span.succeeded(100, 0)
    assert span.value == 200


def test_short_ranges_do_not_count_towards_growth() -> None:
    """A range cut short by the head (fewer blocks than the span) says nothing about what the node allows."""
    span = AdaptiveSpan(100, 2000)
    for _ in range(10):
        span.succeeded(40, 0)
    assert span.value == 100


def test_a_refusal_resets_the_success_streak() -> None:
    span = AdaptiveSpan(200, 2000)
    span.succeeded(200, 0)
    span.succeeded(200, 0)
    span.shrink(None)
    assert span.value == 100
    span.succeeded(100, 0)
    span.succeeded(100, 0)
    assert span.value == 100
    span.succeeded(100, 0)
    assert span.value == 200


def test_growth_is_capped_by_the_maximum() -> None:
    span = AdaptiveSpan(700, 1000)
    for _ in range(30):
        span.succeeded(span.value, 0)
        assert span.value <= 1000
    assert span.value == 1000


def test_busy_ranges_do_not_grow_the_span() -> None:
    span = AdaptiveSpan(100, 2000)
    for _ in range(6):
        span.succeeded(100, TARGET_LOGS // 2)
    assert span.value == 100


def test_a_range_with_more_than_target_logs_shrinks_in_proportion() -> None:
    span = AdaptiveSpan(1000, 2000)
    span.succeeded(1000, 4 * TARGET_LOGS)
    assert span.value == 250  # a quarter of the blocks would have carried about TARGET_LOGS
    span = AdaptiveSpan(1000, 2000)
    span.succeeded(1000, TARGET_LOGS)
    assert span.value == 1000  # exactly TARGET_LOGS is still fine


def test_a_single_block_with_too_many_logs_keeps_one_block() -> None:
    span = AdaptiveSpan(1, 2000)
    span.succeeded(1, 10 * TARGET_LOGS)
    assert span.value == 1


def test_on_change_is_called_with_each_new_value_and_only_on_change() -> None:
    seen: list[int] = []
    span = AdaptiveSpan(8, 16, on_change=seen.append)
    span.shrink(None)  # 8 -> 4
    span.shrink(10)  # 4 -> 2
    span.shrink(None)  # 2 -> 1
    span.shrink(None)  # stays 1: no call
    for _ in range(3):
        span.succeeded(1, 0)  # -> 2
    for _ in range(2):
        span.succeeded(2, 0)  # no change yet
    span.succeeded(2, 7 * TARGET_LOGS)  # 2 * TARGET / (7 TARGET) -> max(1, 0) = 1
    assert seen == [4, 2, 1, 2, 1]
    assert span.value == 1


@settings(max_examples=60, deadline=None)
@given(
    initial=st.integers(min_value=1, max_value=5000),
    maximum=st.integers(min_value=1, max_value=5000),
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("shrink"), st.one_of(st.none(), st.integers(min_value=0, max_value=10_000))),
            st.tuples(st.just("ok"), st.integers(min_value=0, max_value=5 * TARGET_LOGS)),
        ),
        max_size=60,
    ),
)
def test_the_span_always_stays_between_one_and_the_maximum(
    initial: int, maximum: int, steps: list[tuple[str, int | None]]
) -> None:
    changes: list[int] = []
    span = AdaptiveSpan(initial, maximum, on_change=changes.append)
    for kind, argument in steps:
        before = span.value
        if kind == "shrink":
            span.shrink(argument)
            assert span.value <= max(1, before // 2) or before == 1
            if argument:
                assert span.value <= max(1, argument)
        else:
            assert argument is not None
            span.succeeded(span.value, argument)
            if argument > TARGET_LOGS:
                assert span.value <= before
        assert 1 <= span.value <= max(1, maximum)
        if span.value != before:
            assert changes[-1] == span.value
