"""``parse_request``: heads in, requests (or why not) out; never an exception on any bytes."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tagwall.l7fw import MAX_HEAD_BYTES, BodyFraming, Framing, HttpRequest, Malformed, parse_request

GET = b"GET /a/../admin?id=1%27 HTTP/1.1\r\nHost: shop\r\nAccept: */*\r\n\r\n"


def test_a_complete_head_is_parsed() -> None:
    """The module docstring's worked example, plus a header: fields as sent, names lower."""
    request = parse_request(GET + b"body of the next request")
    assert isinstance(request, HttpRequest)
    assert (request.method, request.path, request.query) == ("GET", "/a/../admin", "id=1%27")
    assert (request.version, request.host, request.head_bytes) == ("1.1", "shop", len(GET))
    assert request.headers == (("host", "shop"), ("accept", "*/*"))
    assert request.body == BodyFraming()
    assert request.normalized_path == "/admin"
    assert request.decoded_query == "id=1'"


@pytest.mark.parametrize(
    ("path", "normalized"),
    [
        ("/", "/"),
        ("/%61dmin/x", "/admin/x"),
        ("//admin", "/admin"),
        ("/./admin/./", "/admin/"),
        ("/../../admin", "/admin"),
        ("/shop/items", "/shop/items"),
    ],
)
def test_paths_are_normalized_as_a_file_server_reads_them(path: str, normalized: str) -> None:
    request = parse_request(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    assert isinstance(request, HttpRequest)
    assert request.normalized_path == normalized


def test_an_absolute_form_target_gives_its_path_and_query() -> None:
    request = parse_request(b"GET http://shop/admin?x=1 HTTP/1.1\r\n\r\n")
    assert isinstance(request, HttpRequest)
    assert (request.path, request.query, request.host) == ("/admin", "x=1", None)


@pytest.mark.parametrize("cut", range(len(GET)))
def test_every_prefix_of_a_head_needs_more(cut: int) -> None:
    assert parse_request(GET[:cut]) is Framing.NEED_MORE


@pytest.mark.parametrize(
    "data",
    [b"\x16\x03\x01\x02\x00", b"SSH-2.0-OpenSSH_9.2\r\n", b" GET / HTTP/1.1\r\n", b"A" * 40],
)
def test_bytes_that_cannot_start_a_request_are_not_http(data: bytes) -> None:
    assert parse_request(data) is Framing.NOT_HTTP


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b"GET /admin\r\n\r\n", "is not 'METHOD TARGET HTTP/1.x'"),  # HTTP/0.9
        (b"GET /a HTTP/2.0\r\n\r\n", "is not 'METHOD TARGET HTTP/1.x'"),
        (b"GET admin HTTP/1.1\r\n\r\n", "is neither /path nor a URL"),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", "is not 'Name: value'"),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", "is not 'Name: value'"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "2 Host headers"),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "both Content-Length and Transfer-Encoding",
        ),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", "conflicting"),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "is not a number"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "is not 'chunked'"),
    ],
)
def test_heads_a_server_might_read_differently_are_malformed(head: bytes, reason: str) -> None:
    result = parse_request(head)
    assert isinstance(result, Malformed) and reason in result.reason


def test_a_head_longer_than_the_limit_is_malformed() -> None:
    head = b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES
    result = parse_request(head)
    assert isinstance(result, Malformed) and str(MAX_HEAD_BYTES) in result.reason


@pytest.mark.parametrize(
    ("header", "framing"),
    [
        (b"Content-Length: 12", BodyFraming(content_length=12)),
        (b"Transfer-Encoding: chunked", BodyFraming(chunked=True)),
    ],
)
def test_body_framing(header: bytes, framing: BodyFraming) -> None:
    request = parse_request(b"POST /f HTTP/1.1\r\n" + header + b"\r\n\r\n")
    assert isinstance(request, HttpRequest) and request.body == framing


@given(st.binary(max_size=300))
@example(b"GET \xff HTTP/1.1\r\n\r\n")
@example(b"GET http://[::1 HTTP/1.1\r\n\r\n")
@example(b"GET /%ff%fe HTTP/1.1\r\n\r\n")
def test_any_bytes_give_a_result_never_an_exception(data: bytes) -> None:
    result = parse_request(data)
    if isinstance(result, HttpRequest):
        assert 0 < result.head_bytes <= len(data)
        assert result.normalized_path.startswith("/")


@given(
    st.sampled_from(["GET", "POST", "DELETE"]),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=0, max_size=40),
    st.lists(
        st.tuples(
            st.from_regex(r"[A-Za-z-]{1,10}", fullmatch=True),
            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20).map(str.strip),
        ),
        max_size=4,
    ),
)
def test_a_well_formed_head_round_trips(
    method: str, tail: str, headers: list[tuple[str, str]]
) -> None:
    """Whatever a client sends in the well-formed shape comes back field by field."""
    headers = [
        (n, v)
        for n, v in headers
        if n.lower() not in ("host", "content-length", "transfer-encoding")
    ]
    lines = [f"{method} /{tail} HTTP/1.1", *(f"{n}: {v}" for n, v in headers)]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    request = parse_request(head)
    assert isinstance(request, HttpRequest)
    assert request.method == method and request.head_bytes == len(head)
    assert request.path + ("?" + request.query if "?" in tail else "") == "/" + tail
    assert request.headers == tuple((n.lower(), v) for n, v in headers)
