"""The verdict of a flow and why: docs/semantics.md "Evaluation at one end" and "Audit mode".

Each end is evaluated on its own (source at egress, destination at ingress) by walking the
tiers; the flow is allowed when both ends allow.  Every decision records what decided it, so a
trace answers "would this be allowed, and why?".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..model import (
    Action,
    Config,
    FlowService,
    Mode,
    Posture,
    Ref,
    Rule,
    Tier,
    TrafficDirection,
)
from ._flow import Flow, FlowEnd, end_of_workload
from ._match import rule_matches

__all__ = ["Decision", "EndVerdict", "Reason", "RuleRef", "Verdict", "decide", "reach", "trace"]


class Reason(enum.Enum):
    """Why an end decided as it did."""

    RULE = "rule"  # a rule's action decided
    ISOLATED = "application-default-deny"  # application policies apply and none matched
    DEFAULT_POSTURE = "default-posture"  # every tier passed or had no match
    NO_AGENT = "no-agent"  # a bare address or an external workload: this end allows
    LOCAL = "local"  # a workload's traffic to itself never crosses its interface


@dataclass(frozen=True, slots=True)
class RuleRef:
    """Where a rule lives: set, policy, rule name."""

    policy_set: Ref
    policy: Ref
    rule: str

    def __str__(self) -> str:
        return f"{self.policy_set}/{self.policy}/{self.rule}"


@dataclass(frozen=True, slots=True)
class Decision:
    """The decision of one end.

    Invariant: ``rule`` is set iff ``reason`` is RULE; ``tier`` is set for RULE and ISOLATED.
    ``passed`` lists the ``pass`` rules that handed the flow to a later tier, in order.
    """

    action: Action
    reason: Reason
    tier: Tier | None = None
    rule: RuleRef | None = None
    log: bool = False
    via: tuple[Ref, ...] = ()
    passed: tuple[RuleRef, ...] = ()

    @property
    def allows(self) -> bool:
        return self.action.allows

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "action": self.action.value,
            "reason": self.reason.value,
            "tier": self.tier.value if self.tier else None,
            "policySet": str(self.rule.policy_set) if self.rule else None,
            "policy": str(self.rule.policy) if self.rule else None,
            "rule": self.rule.rule if self.rule else None,
            "log": self.log,
        }
        if self.via:
            out["via"] = [str(v) for v in self.via]
        if self.passed:
            out["passedBy"] = [str(p) for p in self.passed]
        return out


def decide(
    config: Config, flow: Flow, direction: TrafficDirection, *, include_audit: bool
) -> Decision:
    """The decision at the end of ``flow`` that evaluates in ``direction``.

    ``include_audit`` False gives the enforced decision (audit policies absent); True gives the
    shadow decision (audit policies enforced).
    """
    end = flow.src if direction is TrafficDirection.EGRESS else flow.dst
    workload = end.workload
    if workload is None or not workload.enforced:
        return Decision(Action.ALLOW, Reason.NO_AGENT)
    passed: list[RuleRef] = []
    for tier in Tier:
        applicable = False
        hit: tuple[RuleRef, Rule] | None = None
        for aps in config.policy_sets_of(tier):
            if direction not in aps.directions or not config.picks(aps, workload):
                continue
            for ref in aps.policies:
                policy = config.policies[ref.policy]
                if policy.mode is Mode.AUDIT and not include_audit:
                    continue
                applicable = True
                for rule in policy.rules:
                    if rule_matches(config, rule, flow):
                        hit = (RuleRef(Ref(aps.name, aps.project), ref.policy, rule.name), rule)
                        break
                if hit:
                    break
            if hit:
                break
        if hit is not None:
            where, rule = hit
            if rule.action is Action.PASS:
                passed.append(where)
                continue
            return Decision(
                rule.action, Reason.RULE, tier, where, rule.log, rule.via, tuple(passed)
            )
        if tier is Tier.APPLICATION and applicable:
            return Decision(Action.DENY, Reason.ISOLATED, tier, passed=tuple(passed))
    posture = config.settings.default_posture
    action = Action.ALLOW if posture is Posture.ALLOW else Action.DENY
    return Decision(action, Reason.DEFAULT_POSTURE, passed=tuple(passed))


@dataclass(frozen=True, slots=True)
class EndVerdict:
    end: FlowEnd
    direction: TrafficDirection
    decision: Decision  # enforced
    shadow: Decision  # with audit policies enforced

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {**self.end.as_dict(), "direction": self.direction.value}
        out.update(self.decision.as_dict())
        out["shadow"] = self.shadow.as_dict()
        return out


@dataclass(frozen=True, slots=True)
class Verdict:
    flow: Flow
    egress: EndVerdict  # at the source
    ingress: EndVerdict  # at the destination

    @property
    def allowed(self) -> bool:
        return self.egress.decision.allows and self.ingress.decision.allows

    @property
    def shadow_allowed(self) -> bool:
        return self.egress.shadow.allows and self.ingress.shadow.allows

    @property
    def label(self) -> str:
        """allow | deny, or would-deny / would-allow when audit policies disagree."""
        if self.allowed == self.shadow_allowed:
            return "allow" if self.allowed else "deny"
        return "allow (would-deny)" if self.allowed else "deny (would-allow)"

    def as_dict(self) -> dict[str, object]:
        return {
            "flow": self.flow.as_dict(),
            "allowed": self.allowed,
            "verdict": "allow" if self.allowed else "deny",
            "shadowAllowed": self.shadow_allowed,
            "shadowVerdict": "allow" if self.shadow_allowed else "deny",
            "egress": self.egress.as_dict(),
            "ingress": self.ingress.as_dict(),
        }


def trace(config: Config, flow: Flow) -> Verdict:
    """The verdict of ``flow`` with the explanation at each end."""
    ends: list[EndVerdict] = []
    for direction in (TrafficDirection.EGRESS, TrafficDirection.INGRESS):
        end = flow.src if direction is TrafficDirection.EGRESS else flow.dst
        same = flow.src.workload
        if same is not None and same.enforced and same is flow.dst.workload:
            local = Decision(Action.ALLOW, Reason.LOCAL)
            ends.append(EndVerdict(end, direction, local, local))
            continue
        ends.append(
            EndVerdict(
                end,
                direction,
                decide(config, flow, direction, include_audit=False),
                decide(config, flow, direction, include_audit=True),
            )
        )
    return Verdict(flow, ends[0], ends[1])


def reach(config: Config, service: FlowService) -> dict[str, dict[str, bool]]:
    """Enforced verdicts over every ordered pair of workloads, self pairs included."""
    names = sorted(config.workloads)
    out: dict[str, dict[str, bool]] = {}
    for a in names:
        wa = config.workloads[a]
        src = end_of_workload(config, wa, wa.ips[0] if wa.ips else None)
        row: dict[str, bool] = {}
        for b in names:
            wb = config.workloads[b]
            same_family = [ip for ip in wb.ips if src.ip is None or ip.version == src.ip.version]
            dst = end_of_workload(config, wb, same_family[0] if same_family else None)
            row[b] = trace(config, Flow(src, dst, service)).allowed
        out[a] = row
    return out
