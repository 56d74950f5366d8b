"""The wire form of programs and deltas (what agents receive and persist) is lossless, and
malformed input is refused with the path of the bad field."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import build, models, mutate

from tagwall.compiler import (
    Compiler,
    apply_delta,
    delta_from_wire,
    delta_to_wire,
    program_from_wire,
    program_to_wire,
)
from tagwall.errors import ValidationError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.data())
def test_programs_and_deltas_survive_the_wire(data: st.DataObject) -> None:
    docs = data.draw(models())
    compiler = Compiler(build(docs))
    programs = {h: compiler.program(h) for h in compiler.hosts()}
    for program in programs.values():
        text = json.dumps(program_to_wire(program))
        assert program_from_wire(json.loads(text)) == program
    new = build(mutate(data, docs))
    for host, delta in compiler.update(new).items():
        back = delta_from_wire(json.loads(json.dumps(delta_to_wire(delta))))
        assert back == delta
        if host in programs:
            assert apply_delta(programs[host], back) == apply_delta(programs[host], delta)


def test_equal_programs_encode_to_the_same_text() -> None:
    """The digest an agent sends (of a program it built by applying deltas) must equal the
    controller's (of a program compiled afresh): the text may not depend on the order in
    which sets and maps were filled."""

    def program(order: tuple[int, ...]) -> dict[str, object]:
        docs = [
            {
                "apiVersion": "tagwall/v1",
                "kind": "Workload",
                "metadata": {"name": f"w{i}"},
                "spec": {
                    "host": "h1" if i < 3 else "h2",
                    "tags": {"tier": "web", "application": "a"},
                    "interfaces": [{"name": "eth0", "ips": [f"10.0.{6 - i}.{i}"]}],
                },
            }
            for i in order
        ]
        docs.append(
            {"apiVersion": "tagwall/v1", "kind": "FirewallPolicy", "metadata": {"name": "p"},
             "spec": {"rules": [{"name": "r", "from": {"tags": "tier=web"},
                                 "to": {"tags": "tier=web"}, "matchTags": ["application"],
                                 "action": "allow"}]}}
        )  # fmt: skip
        docs.append(
            {"apiVersion": "tagwall/v1", "kind": "ApplicationPolicySet", "metadata": {"name": "s"},
             "spec": {"all": True, "policies": [{"name": "p", "sequence": 1}]}}
        )  # fmt: skip
        return program_to_wire(Compiler(build(docs)).program("h1"))

    forward, backward = program((1, 2, 3, 4, 5)), program((5, 4, 3, 2, 1))
    assert json.dumps(forward) == json.dumps(backward)
    web = forward["sets"]["tags:tier=web"]  # type: ignore[index]
    assert web["addresses"] == ["10.0.1.5", "10.0.2.4", "10.0.3.3", "10.0.4.2", "10.0.5.1"]


@pytest.mark.parametrize(
    ("mangle", "path", "reason"),
    [
        (lambda w: w.update(version=99), "version", "wire version 99 is not 1"),
        (lambda w: w.pop("host"), "host", "is required"),
        (
            lambda w: w.update(sets={"s": {"addresses": ["10.0.0.300"], "prefixes": []}}),
            "sets.s.addresses[0]",
            "is not an IP address",
        ),
        (
            lambda w: w.update(chains={"sideways/admin": []}),
            "chains.sideways/admin",
            "is not <ingress|egress>/<admin|application|baseline>",
        ),
        (lambda w: w.update(defaultPosture="maybe"), "defaultPosture", "is not a posture"),
        (lambda w: w.update(interfaces={}), "interfaces", "must be a list"),
    ],
)
def test_malformed_programs_name_the_field(mangle: object, path: str, reason: str) -> None:
    wire = program_to_wire(Compiler(build([])).program("h1"))
    mangle(wire)  # type: ignore[operator]
    with pytest.raises(ValidationError) as info:
        program_from_wire(wire)
    problem = info.value.problems[0]
    assert (problem.path, problem.reason) == (path, reason)
