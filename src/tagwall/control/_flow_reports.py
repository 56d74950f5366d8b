"""Flow reports: what an agent tells the controller's analytics about the flows of its host.

One ``FlowReport`` is one agent's account of one flow over one period: the 5-tuple, the
packets and bytes of that period in each direction, and what decided the flow at each end
*this host enforces* (``egress`` for a local source, ``ingress`` for a local destination; None
for an end enforced elsewhere or nowhere).  A long flow is reported several times (at most
once per report interval); the counters of its reports add up to the flow's.

Shipping: ``POST /api/v1/flows/agent`` (``REPORTS_PATH``) with a JSON body
``{"host": H, "spool": I, "first_seq": S, "dropped": D, "reports": [<report>, ...]}``; the
reports carry the sequence numbers ``S, S+1, …`` of the agent's spool ``I`` (its identity: a
spool made afresh numbers from 1 again under a new one), so a batch sent twice (the answer was
lost, or the controller restarted) is stored once; ``dropped`` (optional) is how many reports
the agent's spool dropped since it was created, because it was full.  The controller answers 200
``{"stored_through": N}`` once every report up to N is committed (or held for pairing, see
``tagwall.analytics``), 404 when it keeps no flows, 422 naming the field of a malformed
report.

A report on the wire (worked example: a web workload's connection to a database on the same
host, allowed at egress by rule ``to-db`` of the web's policy and at ingress by rule
``from-web`` of the database's)::

    {"start_ms": 1764150000000, "end_ms": 1764150002500,
     "src": "10.0.1.2", "dst": "10.0.2.3", "proto": 6, "sport": 40000, "dport": 5432,
     "packets": 12, "bytes": 2100, "rpackets": 10, "rbytes": 5800,
     "egress": {"verdict": "allow", "tier": "application", "policy_set": "shop",
                "policy": "shop-web", "rule": "to-db"},
     "ingress": {"verdict": "allow", "tier": "application", "policy_set": "shop",
                 "policy": "shop-db", "rule": "from-web"}}

``via`` (optional, default empty) lists the service workloads that carried the flow, in its
chain's order, as ``"<instance>/<workload>"`` (``["fw-1/fw-b"]``): a redirect rule steered it.

A default decided when ``rule`` is null: ``policy`` then names it (``application-default-deny``
in tier ``application``, ``default-posture`` in tier ``posture``).  For ICMP, ``sport`` is 0 and
``dport`` is ``type * 256 + code`` (as NetFlow and IPFIX carry it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["REPORTS_PATH", "EndDecision", "FlowReport", "ReportError"]

REPORTS_PATH = "/api/v1/flows/agent"

_VERDICTS = ("allow", "deny")
_U64 = 2**64 - 1


class ReportError(ValueError):
    """A malformed report: ``field`` is its path (``reports[3].dport``)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


@dataclass(frozen=True, slots=True)
class EndDecision:
    """What decided a flow at one end: ``verdict`` is ``allow`` or ``deny``."""

    verdict: str
    tier: str
    policy_set: str | None
    policy: str | None
    rule: str | None

    def to_wire(self) -> dict[str, str | None]:
        return {
            "verdict": self.verdict,
            "tier": self.tier,
            "policy_set": self.policy_set,
            "policy": self.policy,
            "rule": self.rule,
        }

    @classmethod
    def from_wire(cls, value: object, field: str) -> EndDecision | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ReportError(field, "must be an object or null")
        verdict = _text(value, "verdict", field)
        if verdict not in _VERDICTS:
            raise ReportError(f"{field}.verdict", f"{verdict!r} is not one of {list(_VERDICTS)}")
        tier = _text(value, "tier", field)
        return cls(
            verdict,
            tier,
            _text(value, "policy_set", field, optional=True),
            _text(value, "policy", field, optional=True),
            _text(value, "rule", field, optional=True),
        )


@dataclass(frozen=True, slots=True)
class FlowReport:
    start_ms: int
    end_ms: int
    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    packets: int
    bytes: int
    rpackets: int
    rbytes: int
    egress: EndDecision | None
    ingress: EndDecision | None
    via: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "src": self.src,
            "dst": self.dst,
            "proto": self.proto,
            "sport": self.sport,
            "dport": self.dport,
            "packets": self.packets,
            "bytes": self.bytes,
            "rpackets": self.rpackets,
            "rbytes": self.rbytes,
            "egress": self.egress.to_wire() if self.egress else None,
            "ingress": self.ingress.to_wire() if self.ingress else None,
        }
        if self.via:
            out["via"] = list(self.via)
        return out

    @classmethod
    def from_wire(cls, value: object, field: str = "report") -> FlowReport:
        """Raises ``ReportError`` naming the first bad field under ``field``."""
        if not isinstance(value, Mapping):
            raise ReportError(field, "must be an object")
        ints = {
            name: _int(value, name, field, high)
            for name, high in (
                ("start_ms", 2**63 - 1),
                ("end_ms", 2**63 - 1),
                ("proto", 255),
                ("sport", 65535),
                ("dport", 65535),
                ("packets", _U64),
                ("bytes", _U64),
                ("rpackets", _U64),
                ("rbytes", _U64),
            )
        }
        if ints["end_ms"] < ints["start_ms"]:
            raise ReportError(f"{field}.end_ms", "is before start_ms")
        return cls(
            src=_address(value, "src", field),
            dst=_address(value, "dst", field),
            egress=EndDecision.from_wire(value.get("egress"), f"{field}.egress"),
            ingress=EndDecision.from_wire(value.get("ingress"), f"{field}.ingress"),
            via=_via(value.get("via", []), f"{field}.via"),
            **ints,
        )


def _int(value: Mapping[str, object], name: str, field: str, high: int) -> int:
    number = value.get(name)
    if not isinstance(number, int) or isinstance(number, bool):
        raise ReportError(f"{field}.{name}", "must be an integer")
    if not 0 <= number <= high:
        raise ReportError(f"{field}.{name}", f"{number} is outside 0..{high}")
    return number


def _text(value: Mapping[str, object], name: str, field: str, *, optional: bool = False) -> Any:
    text = value.get(name)
    if text is None and optional:
        return None
    if not isinstance(text, str) or not text:
        raise ReportError(f"{field}.{name}", "must be a non-empty string")
    return text


def _via(value: object, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ReportError(field, "must be a list of non-empty strings")
    return tuple(value)


def _address(value: Mapping[str, object], name: str, field: str) -> str:
    text = _text(value, name, field)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ReportError(f"{field}.{name}", f"{text!r} is not an IP address") from None
