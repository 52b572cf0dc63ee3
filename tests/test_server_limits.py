"""Slow and idle clients (server.http_protocol, server.body_limit) cannot hold the server's sockets: connections
beyond max_connections are closed at once, a request head or body that does not arrive within request_timeout
ends its connection, and the server keeps answering."""

from __future__ import annotations

import json
import os
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from server.app import ModelInfo, create_app
from server.settings import ServerSettings
from stream import StreamConfig, StreamEngine
from tests.support.live_server import LiveServer
from tests.test_server_stream import SIZE

MAX_CONNECTIONS = 40
TIMEOUT = 1.0  # request_timeout for these tests; the default is 10 s


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module")
def server(demo_model_dir):
    config = StreamConfig(width=SIZE, height=SIZE, t_list=(1.0,))
    settings = ServerSettings(stream=config, request_timeout=TIMEOUT, max_connections=MAX_CONNECTIONS)
    live = LiveServer(create_app(settings, StreamEngine.from_pretrained(demo_model_dir, config),
                                 ModelInfo("tiny", True, "torch")), settings)
    live.start()
    yield live
    live.stop()


def connect(base: str) -> socket.socket:
    url = urlsplit(base)
    return socket.create_connection((url.hostname, url.port), timeout=5)


def test_hundreds_of_idle_connections_hold_at_most_max_connections_sockets(server):
    baseline = open_fds()
    idle = [connect(server.base) for _ in range(300)]
    time.sleep(0.3 * TIMEOUT)  # the server has accepted (and refused) them all by now
    server_side = open_fds() - baseline - len(idle)  # our 300 client sockets are in this process too
    assert server_side <= MAX_CONNECTIONS + 2, server_side  # +2: an accept in flight
    deadline = time.monotonic() + 5 * TIMEOUT
    while open_fds() - baseline - len(idle) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # idle ones that sent no request head are closed after request_timeout
    assert open_fds() - baseline - len(idle) <= 0
    for sock in idle:
        sock.close()
    assert httpx.get(f"{server.base}/health", timeout=10).status_code == 200


def test_a_head_sent_a_byte_at_a_time_is_cut_off(server):
    sock = connect(server.base)
    head = f"GET /health HTTP/1.1\r\nHost: {urlsplit(server.base).netloc}\r\nX-Slow: {'a' * 400}\r\n\r\n".encode()
    started, cut = time.monotonic(), False
    try:
        for byte in head:  # ~9 s at this pace; each byte restarts uvicorn's own keep-alive timer
            sock.sendall(bytes([byte]))
            time.sleep(0.02)
    except (BrokenPipeError, ConnectionResetError):  # a send after the server closed the connection
        cut = True
    elapsed = time.monotonic() - started
    sock.close()
    assert cut and elapsed < TIMEOUT + 3, elapsed
    assert httpx.get(f"{server.base}/health", timeout=10).status_code == 200


def test_a_body_that_does_not_arrive_gets_408(server):
    sock = connect(server.base)
    sock.sendall(f"POST /prompt HTTP/1.1\r\nHost: {urlsplit(server.base).netloc}\r\nContent-Type: application/json"
                 "\r\nContent-Length: 100\r\n\r\n{".encode())
    sock.settimeout(TIMEOUT + 5)
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "request_timeout"
