"""``ChunkedBody`` finds where a chunked body ends, whatever the pieces it arrives in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tagwall.l7fw import Malformed
from tagwall.l7fw._chunked import ChunkedBody

BODY = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\n"


def test_the_docstring_example() -> None:
    body = ChunkedBody()
    assert body.feed(b"4\r\nWiki\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n") == 14 and body.done


@given(st.lists(st.integers(1, len(BODY)), max_size=10))
def test_any_split_finds_the_same_end(cuts: list[int]) -> None:
    stream = BODY + b"NEXT"
    body, offset, eaten = ChunkedBody(), 0, 0
    for end in [*sorted(cuts), len(stream)]:
        if end <= offset:
            continue
        taken = body.feed(stream[offset:end])
        assert isinstance(taken, int)
        eaten += taken
        offset = end
        if body.done:
            break
    assert body.done and eaten == len(BODY)


@pytest.mark.parametrize("data", [b"zz\r\n", b"4\r\nWikiXX\r\n", b"4\nWiki\r\n", b"1" * 5000])
def test_bodies_that_cannot_be_framed_are_malformed(data: bytes) -> None:
    assert isinstance(ChunkedBody().feed(data), Malformed)
