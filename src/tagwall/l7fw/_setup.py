"""What the firewall changes in its network namespace, and how it puts it back.

The two modes of a service workload (DESIGN §2 "Service chains", §4 "Redirect"):

- ``in-network``: left and right have addresses in different subnets and the namespace routes
  between them.  ``install`` turns on IPv4 forwarding; the inspected packets are the routed
  ones from left to right (``iifname LEFT oifname RIGHT``).
- ``transparent``: left and right are the ports of a bridge and have no addresses.  The bridge
  ``bridge`` is used if it exists (left and right are then enslaved to it if they are not
  already), else created, and deleted on ``remove`` only if ``install`` created it.
  ``net.bridge.bridge-nf-call-iptables=1`` makes bridged IPv4 packets pass the IP hooks
  (br_netfilter), so the same ``inet`` forward chain sees them, with the bridge as both
  devices; whether a packet came in on left is checked by the reader (bridge port ifindex).

Both modes install one table, ``inet tagwall_l7fw``, replaced atomically::

    chain forward  (filter hook forward, priority -10, policy accept)
      [iifname LEFT oifname RIGHT] tcp dport { 80, 8080 } jump inspect
    chain inspect
      queue num Q          ← xt NFQUEUE target, added over netlink (see ``_add_queue_rule``)

Why the queue rule goes over netlink: this kernel has no native ``nft_queue`` expression
(``nft ... queue`` fails with ENOENT: CONFIG_NFT_QUEUE is off), but it has nft_compat and the
xt NFQUEUE target, which ``nft list`` shows as ``queue num Q``.  ``remove`` deletes the table
and restores every sysctl it changed.
"""

from __future__ import annotations

import enum
import os
import socket
import struct
import subprocess
from dataclasses import dataclass

from ._netlink import NLA_F_NESTED, NLM_F_ACK, NLM_F_REQUEST, attr, message, open_socket, wait_ack

__all__ = ["TABLE", "Mode", "Restore", "Setup", "install", "remove", "render_table"]

TABLE = "tagwall_l7fw"
_NFPROTO_INET = 1
_SUBSYS_NFTABLES = 10
_MSG_BATCH_BEGIN, _MSG_BATCH_END = 0x10, 0x11
_MSG_NEWRULE = _SUBSYS_NFTABLES << 8 | 6
_NLM_F_CREATE, _NLM_F_APPEND = 0x400, 0x800
_FORWARD_SYSCTL = "net/ipv4/ip_forward"
_BRIDGE_SYSCTL = "net/bridge/bridge-nf-call-iptables"


class Mode(enum.Enum):
    IN_NETWORK = "in-network"  # routed: addresses on left and right, forwarding on
    TRANSPARENT = "transparent"  # bridged: left and right are ports of one bridge


@dataclass(frozen=True)
class Setup:
    """Everything ``install`` needs; ``bridge`` is used in transparent mode only."""

    mode: Mode
    left: str
    right: str
    ports: tuple[int, ...] = (80, 8080)
    queue: int = 7
    bridge: str = "twl7-br"


@dataclass(frozen=True)
class Restore:
    """What ``remove`` puts back: sysctl path → previous value, and a bridge to delete."""

    sysctls: tuple[tuple[str, str], ...]
    created_bridge: str | None


def render_table(setup: Setup) -> str:
    """The nft script that replaces the table atomically (without the queue rule)."""
    ports = ", ".join(str(port) for port in sorted(set(setup.ports)))
    devices = (
        f'iifname "{setup.left}" oifname "{setup.right}" ' if setup.mode is Mode.IN_NETWORK else ""
    )
    return (
        f"table inet {TABLE} {{}}\n"
        f"delete table inet {TABLE}\n"
        f"table inet {TABLE} {{\n"
        f"  chain forward {{\n"
        f"    type filter hook forward priority -10; policy accept;\n"
        f"    {devices}meta l4proto tcp tcp dport {{ {ports} }} jump inspect\n"
        f"  }}\n"
        f"  chain inspect {{\n"
        f"  }}\n"
        f"}}\n"
    )


def _run(*args: str, stdin: str | None = None) -> None:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")


def _sysctl(path: str, value: str, changed: list[tuple[str, str]]) -> None:
    full = os.path.join("/proc/sys", path)
    with open(full) as f:
        before = f.read().strip()
    if before != value:
        with open(full, "w") as f:
            f.write(value)
        changed.append((path, before))


def _add_queue_rule(queue: int) -> None:
    """Append ``queue num Q`` (xt NFQUEUE revision 3) to chain ``inspect``, in one batch."""
    info = struct.pack("=HHH", queue, 1, 0) + b"\0\0"  # num, total, flags; XT_ALIGN to 8
    target = attr(1, b"NFQUEUE\0") + attr(2, struct.pack("!I", 3)) + attr(3, info)
    expression = attr(1, b"target\0") + attr(2 | NLA_F_NESTED, target)
    rule = (
        attr(1, TABLE.encode() + b"\0")
        + attr(2, b"inspect\0")
        + attr(4 | NLA_F_NESTED, attr(1 | NLA_F_NESTED, expression))
    )
    flags = NLM_F_REQUEST | _NLM_F_CREATE | _NLM_F_APPEND | NLM_F_ACK
    batch = (
        message(_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, socket.AF_UNSPEC, _SUBSYS_NFTABLES, b"")
        + message(_MSG_NEWRULE, flags, 2, _NFPROTO_INET, 0, rule)
        + message(_MSG_BATCH_END, NLM_F_REQUEST, 3, socket.AF_UNSPEC, _SUBSYS_NFTABLES, b"")
    )
    with open_socket() as sock:
        sock.send(batch)
        wait_ack(sock, 2, f"add 'queue num {queue}' to inet {TABLE} inspect")


def _bridge(setup: Setup) -> str | None:
    """Make ``setup.bridge`` bridge left and right; the bridge's name if it was created."""
    created = not os.path.exists(f"/sys/class/net/{setup.bridge}")
    if created:
        _run("ip", "link", "add", setup.bridge, "type", "bridge")
    for port in (setup.left, setup.right):
        if not os.path.exists(f"/sys/class/net/{port}/brport"):
            _run("ip", "link", "set", port, "master", setup.bridge)
    _run("ip", "link", "set", setup.bridge, "up")
    return setup.bridge if created else None


def install(setup: Setup) -> Restore:
    """Apply ``setup`` in the current namespace; what to pass to ``remove`` comes back.  On
    failure, whatever was applied is removed before the error propagates."""
    changed: list[tuple[str, str]] = []
    bridge: str | None = None
    try:
        for port in (setup.left, setup.right):
            _run("ip", "link", "set", port, "up")
        if setup.mode is Mode.IN_NETWORK:
            _sysctl(_FORWARD_SYSCTL, "1", changed)
        else:
            bridge = _bridge(setup)
            _sysctl(_BRIDGE_SYSCTL, "1", changed)
        _run("nft", "-f", "-", stdin=render_table(setup))
        _add_queue_rule(setup.queue)
    except BaseException:
        remove(Restore(tuple(changed), bridge))
        raise
    return Restore(tuple(changed), bridge)


def remove(restore: Restore) -> None:
    """Delete the table, put back the sysctls, delete a created bridge.  Idempotent."""
    subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)
    for path, before in reversed(restore.sysctls):
        with open(os.path.join("/proc/sys", path), "w") as f:
            f.write(before)
    if restore.created_bridge is not None:
        subprocess.run(["ip", "link", "del", restore.created_bridge], capture_output=True)
