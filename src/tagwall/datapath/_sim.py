"""The in-process simulator: a full evaluator of compiled programs.

Not a test fake: it is the data path for scale tests and what-if questions, and the second
of the three evaluators that must agree (reference evaluator, simulator, nftables).  It reads
only the ``Program`` — sets, blocks, maps — exactly as a packet-level data path would: a
packet is addresses, protocol and port, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..compiler import CompiledRule, Program, ProgramDelta, apply_delta
from ..model import Action, FlowService, IPAddress, Posture, Ref, Tier, TrafficDirection

__all__ = ["SimDatapath", "SimDecision", "SimNetwork"]


@dataclass(frozen=True, slots=True)
class SimDecision:
    """Mirrors the reference evaluator's decision: action, why, and which rule."""

    action: Action
    reason: str  # rule | application-default-deny | default-posture | no-agent | local
    tier: Tier | None = None
    policy_set: Ref | None = None
    policy: Ref | None = None
    rule: str | None = None
    passed: tuple[tuple[Ref, Ref, str], ...] = ()


class SimDatapath:
    """One host's simulated data path."""

    def __init__(self) -> None:
        self._program: Program | None = None

    def load(self, program: Program) -> None:
        self._program = program

    def update(self, delta: ProgramDelta) -> None:
        if self._program is None:
            raise RuntimeError("update before load: the simulator has no program yet")
        self._program = apply_delta(self._program, delta)

    def program(self) -> Program | None:
        return self._program

    def decide(
        self,
        direction: TrafficDirection,
        src: IPAddress,
        dst: IPAddress,
        service: FlowService,
        *,
        include_audit: bool = False,
    ) -> SimDecision:
        """The decision for a packet leaving (egress) or reaching (ingress) a local address."""
        prog = self._program
        if prog is None:
            raise RuntimeError("no program loaded")
        local = src if direction is TrafficDirection.EGRESS else dst
        passed: list[tuple[Ref, Ref, str]] = []
        for tier in Tier:
            hit = None
            for block in prog.chains.get((direction, tier), ()):
                if local not in prog.sets[block.applies_to]:
                    continue
                for rule in block.rules:
                    if (rule.audit and not include_audit) or not _matches(
                        prog, rule, src, dst, service
                    ):
                        continue
                    hit = (block.policy_set, rule)
                    break
                if hit:
                    break
            if hit is not None:
                aps, rule = hit
                if rule.action is Action.PASS:
                    passed.append((aps, rule.policy, rule.rule))
                    continue
                return SimDecision(
                    rule.action, "rule", tier, aps, rule.policy, rule.rule, tuple(passed)
                )
            if tier is Tier.APPLICATION:
                iso = prog.isolated_shadow if include_audit else prog.isolated
                if local in prog.sets[iso[direction]]:
                    return SimDecision(
                        Action.DENY, "application-default-deny", tier, passed=tuple(passed)
                    )
        action = Action.ALLOW if prog.default_posture is Posture.ALLOW else Action.DENY
        return SimDecision(action, "default-posture", passed=tuple(passed))


def _matches(
    prog: Program, rule: CompiledRule, src: IPAddress, dst: IPAddress, service: FlowService
) -> bool:
    if rule.src is not None and src not in prog.sets[rule.src]:
        return False
    if rule.dst is not None and dst not in prog.sets[rule.dst]:
        return False
    if rule.services is not None and not any(
        (s.named is not None and (dst, service.protocol, service.port) in prog.port_sets[s.named])
        or (
            s.named is None
            and (s.protocol is None or s.protocol == service.protocol)
            and (
                s.ports is None
                or (service.port is not None and s.ports[0] <= service.port <= s.ports[1])
            )
            and (s.icmp_type is None or s.icmp_type == service.icmp_type)
        )
        for s in rule.services
    ):
        return False
    if rule.match_tags is not None:
        values = prog.tag_maps[rule.match_tags]
        a, b = values.get(src), values.get(dst)
        if a is None or a != b:
            return False
    return True


class SimNetwork:
    """Every host's simulator, and the path of a packet between two addresses."""

    def __init__(self) -> None:
        self.hosts: dict[str, SimDatapath] = {}

    def host_of(self, ip: IPAddress) -> tuple[str, str] | None:
        """(host, workload) whose local interface holds ``ip``, if any."""
        for name, dp in self.hosts.items():
            prog = dp.program()
            for itf in prog.interfaces if prog else ():
                if ip in itf.addresses:
                    return name, itf.workload
        return None

    def verdict(
        self, src: IPAddress, dst: IPAddress, service: FlowService, *, include_audit: bool = False
    ) -> tuple[SimDecision, SimDecision]:
        """(egress decision at the source, ingress decision at the destination).  An end that
        no host holds has no agent and allows."""
        src_at, dst_at = self.host_of(src), self.host_of(dst)
        if src_at is not None and dst_at is not None and src_at[1] == dst_at[1]:
            local = SimDecision(Action.ALLOW, "local")
            return local, local
        ends = []
        for at, direction in (
            (src_at, TrafficDirection.EGRESS),
            (dst_at, TrafficDirection.INGRESS),
        ):
            if at is None:
                ends.append(SimDecision(Action.ALLOW, "no-agent"))
            else:
                ends.append(
                    self.hosts[at[0]].decide(
                        direction, src, dst, service, include_audit=include_audit
                    )
                )
        return ends[0], ends[1]
