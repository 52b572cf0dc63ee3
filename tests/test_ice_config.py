"""``--ice-server`` URLs, TURN credentials and their checks at start; no TURN server needed (tests/test_turn.py
runs them against a real coturn)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import time

import pytest

from rtc.ice_config import IceConfig, IceScheme, IceTransport, IceUrl, mint_credentials
from sana_stream.cli import build_parser, main
from server.serve import build_settings

SECRET = "a-shared-secret-of-coturn-0123"


@pytest.mark.parametrize("text, scheme, host, port, transport", [
    ("stun:stun.example.org", IceScheme.STUN, "stun.example.org", 3478, None),
    ("stun:203.0.113.7:19302", IceScheme.STUN, "203.0.113.7", 19302, None),
    ("turn:turn.example.org", IceScheme.TURN, "turn.example.org", 3478, IceTransport.UDP),
    ("turn:turn.example.org:3478?transport=tcp", IceScheme.TURN, "turn.example.org", 3478, IceTransport.TCP),
    ("turns:turn.example.org:443?transport=tcp", IceScheme.TURNS, "turn.example.org", 443, IceTransport.TCP),
    ("turns:turn.example.org", IceScheme.TURNS, "turn.example.org", 5349, IceTransport.TCP),
])
def test_ice_urls_parse_with_the_rfc_defaults(text, scheme, host, port, transport):
    url = IceUrl.parse(text)
    assert (url.scheme, url.host, url.port, url.effective_transport if url.is_turn else None) == \
        (scheme, host, port, transport)
    assert str(url) == text  # browsers get the URL as it was given


@pytest.mark.parametrize("text, message", [
    ("turn://turn.example.org:3478", "no '//'"),
    ("http:example.org", "the scheme must be stun, turn or turns, got 'http'"),
    ("stuns:example.org", "the scheme must be stun, turn or turns, got 'stuns'"),
    ("turn:example.org:99999", "the port must lie in 1..65535, got 99999"),
    ("turn:example.org?transport=sctp", "transport must be udp or tcp, got 'sctp'"),
    ("stun:example.org?transport=udp", "a stun: URL takes no ?transport="),
    ("turns:example.org?transport=udp", "turns: runs over TLS"),
    ("turn:[::1]:3478", "is malformed"),
    ("turn:", "is malformed"),
    ("example.org:3478", "is malformed"),
])
def test_malformed_ice_urls_are_refused_naming_the_url(text, message):
    with pytest.raises(ValueError, match="ICE server URL") as info:
        IceUrl.parse(text)
    assert repr(text) in str(info.value) and message in str(info.value)


@pytest.mark.parametrize("text", ["turn:alice:hunter2-secret@turn.example.org", "turns://bob:hunter2-secret@h:443",
                                  "stun:hunter2-secret@h"])
def test_a_url_with_credentials_is_refused_without_repeating_them(text):
    with pytest.raises(ValueError, match="holds user@") as info:
        IceUrl.parse(text)
    assert "hunter2" not in str(info.value)


def test_minted_credentials_are_the_turn_rest_api_ones():
    creds = mint_credentials(SECRET, "stream-1", ttl=600, now=1_700_000_000.5)
    assert creds.username == "1700000600:stream-1" and creds.expires_at == 1_700_000_600
    expected = hmac.new(SECRET.encode(), b"1700000600:stream-1", hashlib.sha1).digest()
    assert base64.b64decode(creds.credential) == expected  # coturn recomputes exactly this (tests/test_turn.py)
    assert SECRET not in repr(creds) and creds.credential not in repr(creds)
    with pytest.raises(ValueError, match="credential name"):
        mint_credentials(SECRET, "a:b", ttl=600)  # the first colon ends the expiry


def test_each_minted_credential_has_its_own_server_chosen_name_and_lives_minutes():
    """coturn counts user-quota per NAME of EXPIRY:NAME: a name per connection, never one a client picks."""
    config = IceConfig.from_options(["turn:turn.example.org"], turn_secret=SECRET)
    names = {config.servers()[0][0]["username"].split(":", 1)[1] for _ in range(20)}
    assert len(names) == 20 and all(re.fullmatch(r"c[0-9a-f]{16}", n) for n in names)
    expires_at = config.servers()[1]
    assert expires_at is not None and 240 <= expires_at - time.time() <= 300  # 5 minutes by default
    with pytest.raises(ValueError, match="turn_ttl must lie in 60..3600"):
        IceConfig.from_options(["turn:turn.example.org"], turn_secret=SECRET, turn_ttl=86_400)


def test_servers_for_browsers_carry_fresh_credentials_and_never_the_secret():
    config = IceConfig.from_options(["stun:stun.example.org", "turn:turn.example.org?transport=udp",
                                     "turns:turn.example.org:443"], turn_secret=SECRET, turn_ttl=120)
    servers, expires_at = config.servers()
    assert servers[0] == {"urls": ["stun:stun.example.org"]}
    assert servers[1]["urls"] == ["turn:turn.example.org?transport=udp", "turns:turn.example.org:443"]
    assert int(servers[1]["username"].split(":")[0]) == expires_at
    assert SECRET not in repr(config) and SECRET not in str(servers)
    rtc = config.rtc_configuration()
    assert [s.urls for s in rtc.iceServers] == [servers[0]["urls"], servers[1]["urls"]]

    static = IceConfig.from_options(["turn:turn.example.org"], turn_username="alice", turn_credential="pw-123")
    assert static.servers()[0] == [{"urls": ["turn:turn.example.org"], "username": "alice", "credential": "pw-123"}]
    assert static.servers()[1] is None and "pw-123" not in repr(static)
    assert IceConfig.from_options(["stun:stun.example.org"]).servers() == ([{"urls": ["stun:stun.example.org"]}], None)
    assert IceConfig().servers() == ([], None)
    assert IceConfig.from_options(["", " "], "", "", "") == IceConfig()  # compose files pass empty variables


@pytest.mark.parametrize("options, message", [
    ({"urls": ["turn:turn.example.org"]}, "TURN server turn:turn.example.org needs credentials"),
    ({"urls": ["turn:t.example.org"], "turn_username": "alice"}, "--turn-username and --turn-credential go together"),
    ({"urls": ["turn:t.example.org"], "turn_username": "a", "turn_credential": "b", "turn_secret": SECRET},
     "not both"),
    ({"urls": ["stun:s.example.org"], "turn_secret": SECRET}, "no --ice-server turn: or turns: URL"),
    ({"urls": ["turn:t.example.org"], "turn_secret": "short"}, "at least 16 characters"),
    ({"urls": ["turn:t.example.org"], "turn_secret": SECRET, "turn_ttl": 5}, "turn_ttl must lie in 60..3600"),
])
def test_inconsistent_turn_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        IceConfig.from_options(**options)


def test_ice_options_come_from_the_command_line_or_the_environment(monkeypatch):
    args = build_parser().parse_args(["serve", "--ice-server", "stun:s.example.org", "--ice-server",
                                      "turn:t.example.org?transport=tcp", "--turn-secret", SECRET])
    settings = build_settings(args, "unused-model-id")
    assert [str(u) for u in settings.ice.urls] == ["stun:s.example.org", "turn:t.example.org?transport=tcp"]
    assert SECRET not in repr(settings)

    monkeypatch.setenv("SANA_STREAM_ICE_SERVER", "stun:s.example.org,turn:t.example.org")
    monkeypatch.setenv("SANA_STREAM_TURN_USERNAME", "alice")
    monkeypatch.setenv("SANA_STREAM_TURN_CREDENTIAL", "from-the-environment")
    ice = build_settings(build_parser().parse_args(["serve"]), "unused-model-id").ice
    assert len(ice.urls) == 2 and ice.credentials().credential == "from-the-environment"


@pytest.mark.parametrize("options, message", [
    (["--ice-server", "turn//oops"], "ICE server URL 'turn//oops'"),
    (["--ice-server", "turn:t.example.org"], "needs credentials: pass --turn-secret"),
])
def test_bad_ice_options_stop_serve_with_one_clear_line(caplog, options, message):
    with caplog.at_level(logging.ERROR):
        assert main(["serve", "--model", "/nonexistent/model", *options]) == 2  # before any model is loaded
    assert message in caplog.text
