"""The reference evaluator and the simulator running compiled programs agree — on the verdict
and on the explanation (tier, policy set, policy, rule, reason) at both ends, enforced and
shadow — for random valid models and flows.  And incremental compilation agrees with a fresh
compile: applying the deltas of any change gives exactly the programs of the new model.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import build, flows, models, mutate

from tagwall.compiler import Compiler, Program, apply_delta
from tagwall.datapath import SimDatapath, SimDecision, SimNetwork
from tagwall.evaluator import Decision, make_flow, trace
from tagwall.model import Config, parse_flow_service

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _network(config: Config) -> SimNetwork:
    compiler = Compiler(config)
    net = SimNetwork()
    for host in compiler.hosts():
        dp = SimDatapath()
        dp.load(compiler.program(host))
        net.hosts[host] = dp
    return net


def _ref(decision: Decision) -> tuple[Any, ...]:
    rule = decision.rule
    return (
        decision.action,
        decision.reason.value,
        decision.tier,
        rule.policy_set if rule else None,
        rule.policy if rule else None,
        rule.rule if rule else None,
        tuple((p.policy_set, p.policy, p.rule) for p in decision.passed),
    )


def _sim(decision: SimDecision) -> tuple[Any, ...]:
    return (
        decision.action,
        decision.reason,
        decision.tier,
        decision.policy_set,
        decision.policy,
        decision.rule,
        decision.passed,
    )


def assert_agree(config: Config, net: SimNetwork, src: str, dst: str, service: str) -> None:
    verdict = trace(config, make_flow(config, src, dst, service))
    flow_service = parse_flow_service(service)
    src_ip, dst_ip = verdict.flow.src.ip, verdict.flow.dst.ip
    assert src_ip is not None and dst_ip is not None
    for audit in (False, True):
        egress, ingress = net.verdict(src_ip, dst_ip, flow_service, include_audit=audit)
        want_e = verdict.egress.shadow if audit else verdict.egress.decision
        want_i = verdict.ingress.shadow if audit else verdict.ingress.decision
        assert _sim(egress) == _ref(want_e), f"egress {src}->{dst} {service} audit={audit}"
        assert _sim(ingress) == _ref(want_i), f"ingress {src}->{dst} {service} audit={audit}"


@SETTINGS
@given(st.data())
def test_simulator_agrees_with_reference(data: st.DataObject) -> None:
    config = build(data.draw(models()))
    net = _network(config)
    for _ in range(8):
        assert_agree(config, net, *data.draw(flows(config)))


@SETTINGS
@given(st.data())
def test_incremental_deltas_equal_fresh_compile(data: st.DataObject) -> None:
    docs = data.draw(models())
    compiler = Compiler(build(docs))
    programs = {h: compiler.program(h) for h in compiler.hosts()}
    for _ in range(3):
        docs = mutate(data, docs)
        new = build(docs)
        for host, delta in compiler.update(new).items():
            programs[host] = apply_delta(programs.get(host, Program(host)), delta)
        fresh = Compiler(new)
        for host in fresh.hosts():
            assert programs[host].as_dict() == fresh.program(host).as_dict(), host
        net = SimNetwork()
        for host, program in programs.items():
            net.hosts[host] = dp = SimDatapath()
            dp.load(program)
        for _ in range(4):
            assert_agree(new, net, *data.draw(flows(new)))
