"""Two homes behind NAT on a simulated internet, built of Linux network namespaces, veth pairs and iptables, for the
NAT tests (tests/test_nat.py). Nothing leaves them: the namespaces have no link to the machine's own network.

    server (10.1.0.2) -- server router (NAT, 203.0.113.2, forwards TCP HTTP_PORT only) --+
                                                                                      internet (203.0.113.1: coturn;
    client (10.2.0.2) -- client router (NAT, 203.0.113.3) -------------------------------+  a default route to nowhere)

Both routers are symmetric NATs: ``MASQUERADE --random-fully`` gives every flow its own random public port, and
conntrack lets in only the replies of a flow (address- and port-dependent filtering); everything unsolicited is
dropped. So the two hosts' own addresses, and the public ports STUN finds, are useless to each other: only a TURN
relay joins them. The internet's default route (into a veth that takes nothing) makes a send to a private address vanish
as on the real internet instead of failing at once, which would close a coturn allocation (DESIGN.md).

``ip`` and ``iptables`` need root (``make test`` installs them: scripts/ensure_netns.sh); ``in_netns`` runs a
function on a thread of its own that has entered a namespace (setns affects that thread only), so the test process
itself can be a client inside one.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
HTTP_PORT = 8080
SERVER_IP, SERVER_PUBLIC = "10.1.0.2", "203.0.113.2"
CLIENT_IP, CLIENT_PUBLIC = "10.2.0.2", "203.0.113.3"
INTERNET_IP = "203.0.113.1"  # coturn's address


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _run(*command: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")


def namespaces_missing() -> str | None:
    """Why namespaces with NAT cannot be made here, or None when they can (checked by making one)."""
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/ensure_netns.sh installs it as root)"
    probe = f"sana-probe-{os.getpid()}"
    try:
        _run("ip", "netns", "add", probe)
        _run("ip", "netns", "exec", probe, "iptables", "-t", "nat", "-A", "POSTROUTING", "-j", "MASQUERADE",
             "--random-fully")
    except RuntimeError as exc:
        return f"network namespaces with iptables NAT cannot be made here (root is needed): {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def require_namespaces() -> None:
    reason = namespaces_missing()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the NAT tests must run)")
    pytest.skip(reason)


@dataclass
class NatLab:
    """The namespaces' names; ``exec(ns)`` is the prefix that runs a command inside one."""

    server: str
    server_router: str
    internet: str
    client_router: str
    client: str

    @classmethod
    def build(cls, tag: str) -> NatLab:
        lab = cls(*(f"{tag}-{part}" for part in ("srv", "srv-nat", "inet", "cli-nat", "cli")))
        try:
            lab._build()
        except BaseException:
            lab.remove()
            raise
        return lab

    def exec(self, namespace: str) -> list[str]:
        return ["ip", "netns", "exec", namespace]

    def _in(self, namespace: str, *command: str) -> None:
        _run(*self.exec(namespace), *command)

    def _build(self) -> None:
        for namespace in self.all():
            _run("ip", "netns", "add", namespace)
            self._in(namespace, "ip", "link", "set", "lo", "up")
        self._in(self.internet, "ip", "link", "add", "br0", "type", "bridge")
        self._in(self.internet, "ip", "addr", "add", f"{INTERNET_IP}/24", "dev", "br0")
        self._in(self.internet, "ip", "link", "set", "br0", "up")
        # the default route leads into a veth whose other end takes nothing (frames to a MAC it does not have)
        self._in(self.internet, "ip", "link", "add", "nowhere", "type", "veth", "peer", "name", "void")
        self._in(self.internet, "ip", "addr", "add", "198.51.100.1/24", "dev", "nowhere")
        for device in ("nowhere", "void"):
            self._in(self.internet, "ip", "link", "set", device, "up")
        self._in(self.internet, "ip", "neigh", "add", "198.51.100.254", "lladdr", "02:00:00:00:00:fe", "dev",
                 "nowhere", "nud", "permanent")
        self._in(self.internet, "ip", "route", "add", "default", "via", "198.51.100.254", "dev", "nowhere")
        self._home(self.server, self.server_router, SERVER_IP, "10.1.0.1", SERVER_PUBLIC, "srv")
        self._home(self.client, self.client_router, CLIENT_IP, "10.2.0.1", CLIENT_PUBLIC, "cli")
        self._in(self.server_router, "iptables", "-t", "nat", "-A", "PREROUTING", "-i", "wan", "-p", "tcp",
                 "--dport", str(HTTP_PORT), "-j", "DNAT", "--to-destination", f"{SERVER_IP}:{HTTP_PORT}")
        self._in(self.server_router, "iptables", "-I", "FORWARD", "1", "-i", "wan", "-o", "lan", "-p", "tcp", "-d",
                 SERVER_IP, "--dport", str(HTTP_PORT), "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT")

    def _home(self, host: str, router: str, address: str, gateway: str, public: str, port_name: str) -> None:
        """A host behind its router, the router's WAN side on the internet's bridge, a symmetric NAT between."""
        _run("ip", "link", "add", "lan", "netns", router, "type", "veth", "peer", "name", "eth0", "netns", host)
        _run("ip", "link", "add", "wan", "netns", router, "type", "veth", "peer", "name", port_name, "netns",
             self.internet)
        self._in(host, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        self._in(host, "ip", "link", "set", "eth0", "up")
        self._in(host, "ip", "route", "add", "default", "via", gateway)
        self._in(router, "ip", "addr", "add", f"{gateway}/24", "dev", "lan")
        self._in(router, "ip", "addr", "add", f"{public}/24", "dev", "wan")
        for device in ("lan", "wan"):
            self._in(router, "ip", "link", "set", device, "up")
        self._in(router, "ip", "route", "add", "default", "via", INTERNET_IP)
        self._in(self.internet, "ip", "link", "set", port_name, "master", "br0")
        self._in(self.internet, "ip", "link", "set", port_name, "up")
        self._in(router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        rules = [["-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE", "--random-fully"],
                 ["-P", "FORWARD", "DROP"],
                 ["-A", "FORWARD", "-i", "lan", "-o", "wan", "-j", "ACCEPT"],
                 ["-A", "FORWARD", "-i", "wan", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
                 ["-A", "INPUT", "-i", "wan", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
                 ["-A", "INPUT", "-i", "wan", "-j", "DROP"]]
        for rule in rules:
            self._in(router, "iptables", *rule)

    def all(self) -> tuple[str, ...]:
        return self.server, self.server_router, self.internet, self.client_router, self.client

    def remove(self) -> None:
        for namespace in self.all():
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def in_netns(namespace: str, fn: Callable[[], T], timeout: float = 300.0) -> T:
    """``fn()`` on a new thread inside ``namespace`` (its sockets, and the threads it starts, live there)."""
    result: list[T] = []
    errors: list[BaseException] = []

    def enter_and_run() -> None:
        try:
            with open(f"/run/netns/{namespace}") as handle:
                if ctypes.CDLL(None, use_errno=True).setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {namespace} failed")
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, which raises it
            errors.append(exc)

    thread = threading.Thread(target=enter_and_run, name=f"netns-{namespace}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{fn} inside {namespace} did not finish within {timeout:g} s")
    if errors:
        raise errors[0]
    return result[0]
