"""Host checking (DNS rebinding): the names answered by default, --allowed-host, and the refusal's JSON."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from sana_stream.cli import build_parser
from server.hosts import default_hosts, host_pattern
from server.serve import build_settings
from server.settings import ServerSettings
from tests.support import running
from tests.test_server_stream import local_engine, make_app  # noqa: F401 - fixture


def test_default_hosts_are_loopback_and_the_bound_address():
    assert default_hosts("127.0.0.1") == ["localhost", "127.0.0.1", "[::1]"]
    assert default_hosts("192.168.1.20")[-1] == "192.168.1.20"
    assert default_hosts("::1")[-1] == "[::1]"
    everywhere = default_hosts("0.0.0.0")  # bound to every interface: this machine's names and addresses too
    assert socket.gethostname().lower() in everywhere and "127.0.0.1" in everywhere


@pytest.mark.parametrize("name, pattern", [("Stream.Example.com", "stream.example.com"), ("::1", "[::1]"),
                                           ("[fd00::2]", "[fd00::2]"), ("*.example.com", "*.example.com"),
                                           ("*", "*"), ("10.0.0.7", "10.0.0.7")])
def test_host_patterns(name, pattern):
    assert host_pattern(name) == pattern


@pytest.mark.parametrize("bad", ["http://example.com", "example.com:8080", "example.com/path", "a*.example.com",
                                 "", "*.", "exa mple.com"])
def test_bad_allowed_hosts_are_refused_naming_them(bad):
    with pytest.raises(ValueError, match="allowed host"):
        ServerSettings(allowed_hosts=(bad,))


def test_allowed_host_flag_reaches_the_settings():
    args = build_parser().parse_args(["serve", "--allowed-host", "stream.example.com", "--allowed-host",
                                      "*.lan", "--request-timeout", "5", "--max-connections", "64"])
    settings = build_settings(args, "model")
    assert settings.allowed_hosts == ("stream.example.com", "*.lan")
    assert settings.trusted_hosts[-2:] == ["stream.example.com", "*.lan"]
    assert (settings.request_timeout, settings.max_connections) == (5.0, 64)


def test_only_trusted_hosts_are_answered(local_engine):
    async def main():
        async with running(make_app(local_engine, allowed_hosts=("stream.example.com", "*.lan"))) as base, \
                httpx.AsyncClient(base_url=base) as http:
            port = base.rsplit(":", 1)[1]
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", "stream.example.com", "cam.lan:443",
                         f"[::1]:{port}"):
                assert (await http.get("/health", headers={"Host": host})).status_code == 200, host
            for host in ("evil.example", "stream.example.com.evil.example", "lan", "192.0.2.99"):
                r = await http.get("/config", headers={"Host": host})
                assert r.status_code == 400 and r.json()["error"] == "invalid_host", host
                assert "--allowed-host" in r.json()["detail"]
        async with running(make_app(local_engine, allowed_hosts=("*",))) as base, \
                httpx.AsyncClient(base_url=base) as http:  # "*": the check is off (a proxy that rewrites Host)
            assert (await http.get("/health", headers={"Host": "anything.example"})).status_code == 200

    asyncio.run(main())
