"""The firewall as a process: parse options, install, serve until SIGTERM/SIGINT, remove.

    python -m tagwall.l7fw --mode in-network|transparent --left IF --right IF
        [--rules FILE] [--log FILE] [--ports 80,8080] [--queue N] [--bridge NAME]

Order of events, so that no packet meets a queue without a reader and nothing is left behind:
load and validate the rules (exit 2 naming every problem), bind the queue, install the table
and sysctls (``_setup``), write ``tagwall-l7fw: ready ...`` to stderr, serve; on SIGTERM or
SIGINT remove the table and sysctls (and a bridge it created), then unbind.  Exit status: 0
after a signal, 2 for bad options or rules, 1 when the kernel refuses the setup.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from typing import TextIO

import yaml

from ._firewall import Firewall
from ._flows import FlowTable
from ._nfqueue import NfQueue
from ._rules import DEFAULT_RULES, RuleProblem, RulesError, RuleSet, parse_rules
from ._setup import Mode, Setup, install, remove
from ._verdict_log import VerdictLog

__all__ = ["load_rules", "main"]


def load_rules(path: str | None) -> RuleSet:
    """The rules in YAML or JSON file ``path``; the defaults (``DEFAULT_RULES``) if None."""
    if path is None:
        return parse_rules(DEFAULT_RULES, "<default rules>")
    try:
        with open(path) as f:
            document = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise RulesError(path, [RuleProblem("", path, f"cannot be read: {exc}")]) from None
    return parse_rules(document, path)


def _ports(text: str) -> tuple[int, ...]:
    try:
        ports = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ports {text!r}: not a comma list") from None
    if not all(0 < port < 65536 for port in ports):
        raise argparse.ArgumentTypeError(f"--ports {text!r}: ports are 1-65535")
    return ports


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tagwall.l7fw",
        description="tagwall's reference L7 firewall: inspects HTTP between left and right.",
    )
    parser.add_argument("--mode", required=True, choices=[m.value for m in Mode])
    parser.add_argument("--left", required=True, help="client-side interface")
    parser.add_argument("--right", required=True, help="server-side interface")
    parser.add_argument("--rules", help="YAML/JSON rules file (default: no-admin, sqli)")
    parser.add_argument("--log", help="verdict log, appended (default: stdout)")
    parser.add_argument("--ports", type=_ports, default=(80, 8080), help="default 80,8080")
    parser.add_argument("--queue", type=int, default=7, help="NFQUEUE number (default 7)")
    parser.add_argument(
        "--bridge", default="twl7-br", help="transparent mode: bridge to use or create"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        rules = load_rules(args.rules)
    except RulesError as exc:
        for problem in exc.problems:
            print(f"tagwall-l7fw: {exc.source}: {problem}", file=sys.stderr)
        return 2
    setup = Setup(Mode(args.mode), args.left, args.right, args.ports, args.queue, args.bridge)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    with ExitStack() as stack:
        stream: TextIO = sys.stdout
        if args.log is not None:
            stream = stack.enter_context(open(args.log, "a", encoding="utf-8"))
        try:
            queue = NfQueue(setup.queue)
            stack.callback(queue.close)
            left_ifindex = socket.if_nametoindex(setup.left)
            restore = install(setup)
        except (OSError, RuntimeError) as exc:  # RuntimeError: ip/nft refused (``_setup``)
            print(f"tagwall-l7fw: setup failed: {exc}", file=sys.stderr)
            return 1
        stack.callback(remove, restore)
        firewall = Firewall(queue, FlowTable(rules), VerdictLog(stream), left_ifindex)
        stack.callback(firewall.close)
        names = ", ".join(rule.name for rule in rules.deny)
        print(
            f"tagwall-l7fw: ready mode={setup.mode.value} left={setup.left} "
            f"right={setup.right} ports={','.join(map(str, setup.ports))} deny=[{names}]",
            file=sys.stderr,
            flush=True,
        )
        firewall.run(stop)
    return 0
