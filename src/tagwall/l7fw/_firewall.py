"""The data path: queued packets in, verdicts and refusals out.

Packet path of one refused request, in either mode (client C on left, server S on right)::

    C ──SYN──▶ [forward hook] ─queue─▶ Firewall: SYN, accept ──────────────▶ S
    C ◀──────────────────── SYN-ACK (the reply direction is never queued) ── S
    C ──"GET /admin/x …"──▶ queue ─▶ FlowTable: head complete, rule no-admin denies
         Firewall: log the verdict; accept the packet *replaced* by RST ───▶ S (resets)
         Firewall: AF_PACKET frame out C's port: "403 …" + FIN ──▶ C

The refusal toward the client is a raw Ethernet frame sent out of the port the request came
in on, to the MAC address it came from (the client, or the router in front of it): no route
is needed, so it works in transparent mode where the namespace has no addresses.  An allowed
request's packets are accepted unchanged (the kernel forwards the original bytes).
"""

from __future__ import annotations

import select
import socket
import threading

from ._flows import FlowTable, Refusal
from ._nfqueue import NfQueue, QueuedPacket
from ._packet import parse_segment, refusal_to_client, reset_toward_server
from ._verdict_log import VerdictLog

__all__ = ["Firewall", "refusal_body"]

_ETH_P_IP = 0x0800
_POLL_S = 0.2  # how often ``run`` looks at its stop event


def refusal_body(rule: str | None) -> bytes:
    """The HTTP response the client reads when a request is refused by ``rule``."""
    text = f"Forbidden by tagwall l7fw rule {rule!r}\n".encode()
    head = (
        "HTTP/1.1 403 Forbidden\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(text)}\r\n"
        "Connection: close\r\n"
        f"X-Tagwall-Rule: {rule}\r\n"
        "\r\n"
    )
    return head.encode() + text


def _mac_of(ifname: str) -> bytes:
    with open(f"/sys/class/net/{ifname}/address") as f:
        return bytes.fromhex(f.read().strip().replace(":", ""))


class Firewall:
    """Owns the decisions for queue ``queue``: only packets that came in on ``left_ifindex``
    are inspected (the rest are accepted unchanged).  One thread calls ``run``."""

    def __init__(
        self, queue: NfQueue, flows: FlowTable, log: VerdictLog, left_ifindex: int
    ) -> None:
        self._queue = queue
        self._flows = flows
        self._log = log
        self._left_ifindex = left_ifindex
        self._raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)

    def close(self) -> None:
        self._raw.close()

    def run(self, stop: threading.Event) -> None:
        """Answer packets until ``stop`` is set (checked every ``_POLL_S`` seconds)."""
        while not stop.is_set():
            readable, _, _ = select.select([self._queue], [], [], _POLL_S)
            if readable:
                for packet in self._queue.receive():
                    self.handle(packet)

    def handle(self, packet: QueuedPacket) -> None:
        segment = parse_segment(packet.payload)
        if segment is None or packet.in_ifindex != self._left_ifindex:
            self._queue.accept(packet.packet_id)
            return
        step = self._flows.feed(packet.packet_id, segment)
        for decided in step.decided:
            self._log.record(decided)
        for packet_id in step.drop:
            self._queue.drop(packet_id)
        if step.refuse is not None:
            self._refuse(step.refuse, packet, step.decided[-1].verdict.rule)
        for packet_id in step.accept:
            self._queue.accept(packet_id)

    def _refuse(self, refusal: Refusal, packet: QueuedPacket, rule: str | None) -> None:
        reset = reset_toward_server(refusal.segment, refusal.server_seq)
        self._queue.accept(refusal.packet_id, replacement=reset)
        if packet.src_mac is None:  # no MAC to answer to: the client only sees silence
            return
        ifname = socket.if_indextoname(packet.in_ifindex)
        answer = refusal_to_client(refusal.segment, refusal.client_next_seq, refusal_body(rule))
        frame = packet.src_mac + _mac_of(ifname) + _ETH_P_IP.to_bytes(2, "big") + answer
        self._raw.sendto(frame, (ifname, _ETH_P_IP))
