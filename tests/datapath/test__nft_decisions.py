"""``_nft_decisions`` and the renderer's use of it: every deciding rule reports its decision
id (ct mark for allowed flows, an NFLOG prefix for dropped packets), the ids map back to the
rule, and an update keeps the ids of rules that stay.  Pure; what the kernel does with the
statements is tests/agent's flow-record tests' business."""

from __future__ import annotations

import re

from datapath.test__nft_render import BASE, config_of
from tagwall.compiler import Compiler, apply_delta
from tagwall.datapath._nft_decisions import (
    DECISION_ISOLATED,
    DECISION_POSTURE,
    LOG_GROUP,
    allocate_decisions,
    parse_log_prefix,
    split_ct_mark,
)
from tagwall.datapath._nft_render import decision_index, layout_for, render_load, render_update
from tagwall.model import Action, TrafficDirection

EGRESS, INGRESS = TrafficDirection.EGRESS, TrafficDirection.INGRESS


def test_a_ct_mark_carries_the_egress_decision_high_and_the_ingress_decision_low() -> None:
    assert split_ct_mark(0x00070003) == {EGRESS: 7, INGRESS: 3}
    assert split_ct_mark(0) == {EGRESS: 0, INGRESS: 0}


def test_log_prefixes_round_trip_and_foreign_prefixes_are_ignored() -> None:
    assert parse_log_prefix("tw:e:7") == (EGRESS, 7)
    assert parse_log_prefix("tw:i:65534") == (INGRESS, DECISION_ISOLATED)
    for foreign in ("", "tw:x:1", "tw:e:", "tw:e:one", "IN=eth0", "tw:e:1:2"):
        assert parse_log_prefix(foreign) is None


def test_allocation_keeps_existing_ids_and_fills_the_lowest_free_ones() -> None:
    ids = {(EGRESS, "a"): 1, (EGRESS, "c"): 3}
    allocate_decisions(ids, [(EGRESS, "a"), (INGRESS, "b"), (EGRESS, "d")])
    assert ids == {(EGRESS, "a"): 1, (EGRESS, "c"): 3, (EGRESS, "d"): 2, (INGRESS, "b"): 4}


def _decided(script: str) -> dict[str, list[str]]:
    """comment → the decision statements of the nft rules with that comment."""
    out: dict[str, list[str]] = {}
    for line in script.splitlines():
        found = re.search(
            r'counter (.*?) ?(accept|drop|goto refuse|goto ingress|return) comment "(.*)"', line
        )
        if found:
            out.setdefault(found.group(3), []).append(found.group(1))
    return out


def test_every_deciding_rule_reports_an_id_that_maps_back_to_it() -> None:
    program = Compiler(config_of(BASE)).program("h")
    layout = layout_for(program, "t")
    index = decision_index(program, layout)
    decided = _decided(render_load(program, layout))
    seen = 0
    for (direction, comment), n in layout.decisions.items():
        key = index[(direction, n)]
        assert comment[1:-1] == f"{key.policy_set} {key.policy} {key.rule}"
        statements = set(decided[comment[1:-1]])
        if key.action is Action.ALLOW:
            half = n << 16 if direction is EGRESS else n
            assert any(f"or {half:#010x}" in s for s in statements), statements
            seen += 1
        elif key.action in (Action.DENY, Action.REJECT):
            letter = "e" if direction is EGRESS else "i"
            assert f'log group {LOG_GROUP} prefix "tw:{letter}:{n}"' in statements
            seen += 1
        else:  # pass decides nothing
            assert statements == {""}
    assert seen >= 2
    assert index[(EGRESS, DECISION_POSTURE)].rule == "default-posture"
    assert index[(INGRESS, DECISION_ISOLATED)].rule == "application-default-deny"


def test_an_update_keeps_the_ids_of_rules_that_stay_and_frees_those_of_rules_that_go() -> None:
    compiler = Compiler(config_of(BASE))
    old = compiler.program("h")
    layout = layout_for(old, "t")
    edited = BASE.replace(
        "  - {name: partners, from: {addressGroup: partners}, to: {tags: tier=web}, "
        "action: reject}\n",
        "  - {name: newcomer, from: {tags: tier=app}, to: {any: true}, services: [tcp/22], "
        "action: deny}\n",
    )
    assert edited != BASE
    delta = compiler.update(config_of(edited))["h"]
    new = apply_delta(old, delta)
    _, after = render_update(old, new, layout, delta)
    kept = {k: n for k, n in layout.decisions.items() if "partners" not in k[1]}
    assert {k: after.decisions[k] for k in kept} == kept
    assert not [k for k in after.decisions if "partners" in k[1]]
    newcomers = {k: n for k, n in after.decisions.items() if "newcomer" in k[1]}
    assert newcomers and all(n not in kept.values() for n in newcomers.values())
    assert {key.rule for key in decision_index(new, after).values()} >= {"newcomer"}
    # a full load from the same layout keeps every id too
    assert layout_for(new, "t", after).decisions == after.decisions
