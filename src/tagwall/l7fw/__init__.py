"""tagwall's reference L7 firewall: the workload that runs in a service instance's network
namespace (DESIGN §2 "Service chains") and inspects HTTP between its left and right ports.

It owns: HTTP/1.x request parsing (``_http``, ``_chunked``), the deny rules and verdicts
(``_rules``), per-connection reassembly and hold/release/refuse decisions (``_flows``), IPv4/TCP
segments and refusals (``_packet``), the NFQUEUE reader (``_nfqueue`` over ``_netlink``), the
nftables table and sysctls of both modes (``_setup``), the verdict log (``_verdict_log``), the
data path (``_firewall``) and the process (``_cli``, ``python -m tagwall.l7fw``).  It imports
nothing else from tagwall but the leaf ``tagwall._checksum``: the agent will start it as a
process, never import it.

Design: NFQUEUE, not a TPROXY proxy.  Measured on the target kernel (6.x, nftables 1.0.6):

- transparent mode with TPROXY needs the bridge to hand packets up to IP (``meta broute``):
  nft 1.0.6 does not know ``meta broute``, the kernel has neither NFT_BRIDGE_META nor the
  legacy ebtables broute table, and br_netfilter bridges a TPROXY'd packet anyway (its
  destination address is unchanged).  A proxy would also need routes and ARP on ports that
  have no addresses, with both ends in one subnet.
- the queue sits in the forward path of both modes alike (br_netfilter shows bridged IPv4
  packets to the same ``inet`` forward hook), keeps the client's own TCP connection end to end
  (the server sees the client's address, ports, options and bytes unchanged), and needs no
  address.  The kernel lacks the native nft ``queue`` expression, so the one queue rule is the
  xt NFQUEUE target added over netlink (``_setup``).
- the price: the reader reassembles TCP itself (``_flows``) and injects its own refusals
  (``_packet``, ``_firewall``); every inspected segment crosses to userspace.

Limits: IPv4 only (IPv6 passes uninspected: the rule matches IPv6 too, but the reader accepts
what it cannot parse); HTTP/1.x only (TLS and HTTP/2 on the inspected ports are not HTTP and
pass); a head split over small writes can wait one client retransmission (Nagle holds the
second write until the first, which the firewall holds, is acknowledged); a denied request
ends its connection, so pipelined requests held in the same packets go down with it (they are
logged as allowed), and the 403's sequence number assumes the client has read every response
before it (true unless responses to pipelined requests are still in flight).
"""

from ._cli import load_rules, main
from ._flows import Decided, FlowStatistics, FlowTable, Refusal, Step
from ._http import MAX_HEAD_BYTES, BodyFraming, Framing, HttpRequest, Malformed, parse_request
from ._rules import (
    DEFAULT_RULES,
    MALFORMED_RULE,
    SQLI_PATTERN,
    Action,
    Rule,
    RuleProblem,
    RulesError,
    RuleSet,
    Verdict,
    decide,
    parse_rules,
)
from ._setup import TABLE, Mode, Setup, render_table
from ._verdict_log import VerdictLog

__all__ = [
    "DEFAULT_RULES",
    "MALFORMED_RULE",
    "MAX_HEAD_BYTES",
    "SQLI_PATTERN",
    "TABLE",
    "Action",
    "BodyFraming",
    "Decided",
    "FlowStatistics",
    "FlowTable",
    "Framing",
    "HttpRequest",
    "Malformed",
    "Mode",
    "Refusal",
    "Rule",
    "RuleProblem",
    "RuleSet",
    "RulesError",
    "Setup",
    "Step",
    "Verdict",
    "VerdictLog",
    "decide",
    "load_rules",
    "main",
    "parse_request",
    "parse_rules",
    "render_table",
]
