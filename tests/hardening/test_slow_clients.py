"""Slow or idle clients cannot hold a connection of the API for ever (issue 9).

The API served by uvicorn as ``dealflow serve`` serves it (dealflow.server), with small limits
so the test is quick, and raw sockets for clients no HTTP library would imitate: one that
connects and says nothing, one that sends its request head a byte at a time (slowloris), one
that sends its body a byte at a time, and a well-behaved keep-alive client that must not
notice any of it.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.persistence.settings import StoreSettings
from engine.settings import Settings
from tests.conftest import TEST_TOKEN
from tests.helpers import api_services
from tests.live import dealflow_env, serve_process, served

HEADER_S = 0.6
BODY_S = 0.8
KEEPALIVE_S = 1.5
LIMITS = Settings.load(
    {
        "DEALFLOW_HTTP_HEADER_TIMEOUT": str(HEADER_S),
        "DEALFLOW_HTTP_BODY_TIMEOUT": str(BODY_S),
        "DEALFLOW_HTTP_KEEPALIVE_TIMEOUT": str(KEEPALIVE_S),
    }
)
SLACK_S = 0.5  # scheduling on a busy machine


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    settings = StoreSettings(database_url=None, home=Path(tmp_path_factory.mktemp("slow")))
    with api_services(settings) as services, served(services, LIMITS) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


def _connect(address: tuple[str, int]) -> socket.socket:
    return socket.create_connection(address, timeout=10)


def _read_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _dribble(sock: socket.socket, data: bytes, every: float = 0.05) -> tuple[float, bytes]:
    """Send ``data`` a byte at a time until the server answers or closes; how long that took
    and what it said."""
    started = time.monotonic()
    for byte in data:
        readable, _, _ = select.select([sock], [], [], every)
        if readable:
            break
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
    else:
        raise AssertionError("the server let a dribbling client send everything")
    try:
        said = _read_until_closed(sock)
    except ConnectionResetError:
        said = b""
    return time.monotonic() - started, said


def _response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


def _request(sock: socket.socket, path: str = "/healthz") -> tuple[int, dict[str, str], bytes]:
    """One GET on a kept-alive connection, its whole response read (Content-Length)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    sock.settimeout(10)
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {raw!r}"
        raw += chunk
    status, headers, body = _response(raw)
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return status, headers, body


def test_a_connection_that_sends_nothing_is_closed(address: tuple[str, int]) -> None:
    with _connect(address) as sock:
        started = time.monotonic()
        said = _read_until_closed(sock)
        took = time.monotonic() - started
    assert said == b""
    assert HEADER_S - 0.1 <= took <= HEADER_S + SLACK_S, took


def test_a_head_sent_a_byte_at_a_time_is_cut_off(address: tuple[str, int]) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: test\r\n" + b"X-Slow: " + b"a" * 400 + b"\r\n\r\n"
    with _connect(address) as sock:
        took, said = _dribble(sock, head)
    assert took <= HEADER_S + SLACK_S, took
    status, headers, body = _response(said)
    assert status == 408 and headers["connection"] == "close", said
    assert json.loads(body)["error"] == "request_timeout"


def test_a_body_sent_a_byte_at_a_time_is_answered_408(address: tuple[str, int]) -> None:
    body = json.dumps({"type": "opened", "event_id": "slow", "pipeline_id": "default"}).encode()
    body += b" " * 200
    head = (
        "POST /v1/deals/slow-body/events HTTP/1.1\r\nHost: test\r\n"
        f"Authorization: Bearer {TEST_TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with _connect(address) as sock:
        sock.sendall(head)
        took, said = _dribble(sock, body)
    assert BODY_S - 0.1 <= took <= BODY_S + SLACK_S, took
    status, headers, answer = _response(said)
    assert status == 408 and headers["connection"] == "close", said
    document = json.loads(answer)
    assert document["error"] == "request_timeout" and document["message"], document


def test_a_keep_alive_client_is_not_affected(address: tuple[str, int]) -> None:
    """Requests on one connection, paused for less than the keep-alive timeout but longer in
    all than the head and body limits; then idle until the keep-alive timeout closes it."""
    with _connect(address) as sock:
        started = time.monotonic()
        for _ in range(6):
            status, _, body = _request(sock)
            assert status == 200 and json.loads(body) == {"status": "ok"}
            time.sleep(HEADER_S * 0.9)
        assert time.monotonic() - started > HEADER_S + BODY_S
        # A request whose head arrives in pieces, each well in time, is fine too.
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        time.sleep(HEADER_S / 3)
        status, _, _ = _request_rest(sock, b"Host: test\r\n\r\n")
        assert status == 200
        idle_from = time.monotonic()
        assert _read_until_closed(sock) == b""
        idle = time.monotonic() - idle_from
    assert KEEPALIVE_S - 0.1 <= idle <= KEEPALIVE_S + SLACK_S, idle


def _request_rest(sock: socket.socket, rest: bytes) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(rest)
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    status, headers, body = _response(raw)
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return status, headers, body


def test_long_answers_and_streams_are_not_cut(address: tuple[str, int]) -> None:
    """The limits are on what the client sends: a long-poll answered after longer than both,
    and an SSE stream open for longer, are untouched."""
    auth = f"Authorization: Bearer {TEST_TOKEN}\r\n"
    wait = HEADER_S + BODY_S + 0.4
    with _connect(address) as sock:
        started = time.monotonic()
        sock.sendall(
            f"GET /v1/feed?after=999&wait={wait} HTTP/1.1\r\nHost: t\r\n{auth}\r\n".encode()
        )
        status, _, body = _request_rest(sock, b"")
        assert status == 200 and json.loads(body)["events"] == [], body
        assert time.monotonic() - started >= wait
    with _connect(address) as sock:
        sock.sendall(
            f"GET /v1/feed HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n{auth}\r\n".encode()
        )
        sock.settimeout(10)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + HEADER_S + BODY_S + 0.4
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], left)
            if readable:
                assert sock.recv(65536) != b"", "the stream was closed"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_dealflow_serve_takes_the_limits_from_its_environment(
    tmp_path: Path, request: pytest.FixtureRequest, workers: str
) -> None:
    """`serve` and each of `serve --workers 2`'s processes (PostgreSQL) cut slow clients off."""
    env = dealflow_env(
        tmp_path,
        request.getfixturevalue("pg_url") if workers != "1" else None,
        DEALFLOW_BOOTSTRAP_TOKEN=TEST_TOKEN,
        DEALFLOW_HTTP_HEADER_TIMEOUT=str(HEADER_S),
        DEALFLOW_HTTP_BODY_TIMEOUT=str(BODY_S),
    )
    with serve_process(env, tmp_path, "--no-projections", "--workers", workers) as url:
        host, port = url.removeprefix("http://").split(":")
        for _ in range(int(workers) * 2):  # connections land on either worker
            with _connect((host, int(port))) as sock:
                started = time.monotonic()
                assert _read_until_closed(sock) == b""
                assert time.monotonic() - started <= HEADER_S + SLACK_S
        with _connect((host, int(port))) as sock:
            took, said = _dribble(sock, b"GET /healthz HTTP/1.1\r\nHost: test\r\n" * 20)
        assert took <= HEADER_S + SLACK_S and _response(said)[0] == 408, said
        with _connect((host, int(port))) as sock:
            sock.sendall(
                b"POST /v1/deals/d/events HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n"
                + f"Authorization: Bearer {TEST_TOKEN}\r\n\r\n".encode()
            )
            took, said = _dribble(sock, b"{" * 50)
        assert took <= BODY_S + SLACK_S and _response(said)[0] == 408, said
