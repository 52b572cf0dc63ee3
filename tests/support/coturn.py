"""A real coturn (Debian's ``turnserver``) on free loopback ports, for the TURN tests.

Each instance listens on 127.0.0.1 (UDP and TCP on one port), relays from 127.0.0.1 (peers on loopback allowed:
coturn refuses them by default), has no TLS, no CLI, and keeps its pid file, user database and log in a
temporary directory, so it runs without root. It dies with the test process (PR_SET_PDEATHSIG) should the
fixture's teardown never run. Without ``turnserver`` the tests skip with the reason, except under CI=true,
where they fail: ``make test`` installs coturn (scripts/ensure_coturn.sh).
"""

from __future__ import annotations

import ctypes
import os
import random
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from benchmarks.loopback import free_port
from tests.support.processes import terminate

TURNSERVER = os.environ.get("SANA_STREAM_TURNSERVER", "turnserver")
REALM = "sana-stream.test"
_PR_SET_PDEATHSIG = 1


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_coturn() -> str:
    path = shutil.which(TURNSERVER)
    if path is None:
        reason = f"no coturn ({TURNSERVER!r} is not on PATH)"
        if in_ci():
            pytest.fail(f"{reason} (CI=true: the TURN tests must run)")
        pytest.skip(f"{reason}: the TURN tests need Debian's coturn; `make test` as root installs it "
                    "(scripts/ensure_coturn.sh), or run `apt-get install coturn`")
    return path


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stun_answers(port: int, address: str = "127.0.0.1") -> bool:
    """Whether a STUN Binding request to address:port over UDP gets an answer."""
    request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + secrets.token_bytes(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(request, (address, port))
        try:
            return s.recv(2048)[8:20] == request[8:20]
        except OSError:
            return False


@dataclass
class Coturn:
    process: subprocess.Popen
    port: int
    log: Path
    secret: str | None = field(default=None, repr=False)  # use-auth-secret mode
    user: tuple[str, str] | None = field(default=None, repr=False)  # lt-cred-mech mode: (username, password)

    address: str = "127.0.0.1"

    def url(self, transport: str = "udp") -> str:
        return f"turn:{self.address}:{self.port}?transport={transport}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        terminate(self.process)


def start_coturn(directory: Path, *, secret: str | None = None, user: tuple[str, str] | None = None,
                 config: Path | None = None, extra: tuple[str, ...] = (), ports: int = 200,
                 timeout: float = 20.0, address: str = "127.0.0.1", prefix: Sequence[str] = (),
                 answers: Callable[[int], bool] = stun_answers) -> Coturn:
    """Starts coturn with a shared ``secret`` (TURN REST API credentials) or one static ``user``, from its options
    alone or from a ``config`` file (the ``secret`` and ``extra`` lines appended, as the compose service does;
    addresses, ``ports`` relay ports and files still this test's); returns once it answers STUN on its port
    (``answers(port)``). ``address``: where it listens and relays from, ``prefix``: what runs it (the NAT tests:
    ``ip netns exec NS``)."""
    binary = require_coturn()
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port() if address == "127.0.0.1" else 3478  # a namespace of its own has 3478 free
    low = random.randrange(40_000, 59_000, 200)  # coturn skips relay ports in use by others
    log = directory / "turnserver.log"
    loopback = ["--allow-loopback-peers"] if address == "127.0.0.1" else []
    args = [*prefix, binary, f"--listening-ip={address}", f"--relay-ip={address}", f"--listening-port={port}",
            f"--min-port={low}", f"--max-port={low + ports - 1}", *loopback, "--no-tls", "--no-dtls",
            "--no-cli", f"--realm={REALM}", "--fingerprint", "--no-software-attribute", "--no-multicast-peers",
            f"--pidfile={directory / 'turnserver.pid'}", f"--userdb={directory / 'turndb'}",
            f"--log-file={log}", "--simple-log", "--no-stdout-log"]
    if config is not None:  # the file says how clients authenticate
        copy = directory / "turnserver.conf"
        copy.write_text("\n".join([config.read_text(), f"static-auth-secret={secret}", *extra, ""]))
        copy.chmod(0o600)
        args[len(prefix) + 1:len(prefix) + 1] = ["-c", str(copy)]
    elif secret is not None:
        args += ["-n", "--use-auth-secret", f"--static-auth-secret={secret}"]
    elif user is not None:
        args += ["-n", "--lt-cred-mech", f"--user={user[0]}:{user[1]}"]
    else:
        raise ValueError("start_coturn needs a secret or a user")
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               preexec_fn=_die_with_parent)
    server = Coturn(process, port, log, secret, user, address)
    deadline = time.monotonic() + timeout
    while not answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"coturn did not start (exit status {process.returncode}):\n{server.log_text()[-3000:]}")
        time.sleep(0.1)
    return server
