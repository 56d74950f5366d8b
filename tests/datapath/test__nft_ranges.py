"""Sets stored as runs (``_nft_ranges``, compiler ``_ranges.py``): the text of loads and
updates, and the layout's counts (pure; test__nft.py runs them on the kernel)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagwall.compiler import Compiler, Program, apply_delta
from tagwall.datapath._nft_render import Layout, layout_for, render_load, render_update
from tagwall.model import Config, load, parse_documents

POOL = 40  # workloads of host "other" at 10.0.1.1 … 10.0.1.40


def manifests(workloads: Iterable[tuple[str, str, str, str]]) -> Config:
    """Workloads (name, host, ips as YAML, tier); web may call app on tcp/80, everything
    else is isolated."""
    docs = [
        f"kind: Workload\nmetadata: {{name: {name}}}\nspec: {{host: {host}, "
        f"interfaces: [{{name: e, ips: {ips}}}], tags: {{tier: {tier}}}}}"
        for name, host, ips, tier in workloads
    ]
    docs += [
        "kind: FirewallPolicy\nmetadata: {name: p}\nspec: {rules: [{name: web-app, "
        "from: {tags: tier=web}, to: {tags: tier=app}, services: [tcp/80], action: allow}]}",
        "kind: ApplicationPolicySet\nmetadata: {name: apps}\n"
        "spec: {tier: application, all: true, policies: [{name: p}]}",
    ]
    text = "".join(f"apiVersion: tagwall/v1\n{d}\n---\n" for d in docs)
    return load(parse_documents(text, "test.yaml"))


def estate(tiers: list[str]) -> Config:
    """w1 (web) on h; the pool on "other" with ``tiers``."""
    pool = [(f"p{i}", "other", f"[10.0.1.{i}]", t) for i, t in enumerate(tiers, start=1)]
    return manifests([("w1", "h", "[10.0.0.1]", "web"), *pool])


_DECLARED = re.compile(r"(?:^\s*set|^add set inet \S+) (\S+) \{.*?(?:elements = \{ (.*?) \})?; \}$")
_ELEMENTS = re.compile(r"^(add|delete) element inet \S+ (\S+) \{ (.*) \}$")
_DROPPED = re.compile(r"^delete set inet \S+ (\S+)$")


def applied(sets: dict[str, set[str]], script: str) -> dict[str, set[str]]:
    """What nft's sets hold after ``script``, by name, as element strings."""
    out = {} if script.startswith("table") else {k: set(v) for k, v in sets.items()}
    for line in script.splitlines():
        if m := _DECLARED.match(line):
            out[m[1]] = set(m[2].split(", ")) if m[2] else set()
        elif m := _ELEMENTS.match(line):
            elements = set(m[3].split(", "))
            if m[1] == "add":
                assert not elements & out[m[2]], line  # nft refuses an element it holds
                out[m[2]] |= elements
            else:
                assert elements <= out[m[2]], line  # nft refuses to delete what it lacks
                out[m[2]] -= elements
        elif m := _DROPPED.match(line):
            del out[m[1]]
    return out


def ranged_names(layout: Layout) -> set[str]:
    return {name for name, _ in layout.ranged}


def test_a_pool_of_consecutive_addresses_is_one_interval_set_of_runs() -> None:
    program = Compiler(estate(["app"] * POOL)).program("h")
    layout = layout_for(program, "t")
    assert ranged_names(layout) == {"tags:tier=app"}
    script = render_load(program, layout)
    [decl] = [x.strip() for x in script.splitlines() if "flags interval" in x]
    name = decl.split()[1]
    assert name.endswith("_4_r") and "elements = { 10.0.1.1-10.0.1.40 }" in decl
    assert f"ip daddr @{name} " in script
    assert program.set_entries()["tags:tier=app"] == 1


def test_a_member_leaving_the_middle_of_a_run_splits_it_in_element_commands() -> None:
    tiers = ["app"] * POOL
    compiler = Compiler(estate(tiers))
    program = compiler.program("h")
    layout = layout_for(program, "t")
    tiers[19] = "db"  # 10.0.1.20
    delta = compiler.update(estate(tiers))["h"]
    script, after = render_update(program, apply_delta(program, delta), layout, delta)
    [name] = {line.split()[4] for line in script.splitlines()}
    assert name.endswith("_4_r")
    assert script.splitlines() == [
        f"delete element inet t {name} {{ 10.0.1.1-10.0.1.40 }}",
        f"add element inet t {name} {{ 10.0.1.1-10.0.1.19, 10.0.1.21-10.0.1.40 }}",
    ]
    assert after.ranges[("tags:tier=app", 4)] == (POOL - 1, 2)


def test_a_set_that_no_longer_pays_for_its_runs_goes_back_to_single_addresses() -> None:
    tiers = ["app"] * POOL
    compiler = Compiler(estate(tiers))
    program = compiler.program("h")
    layout = layout_for(program, "t")
    scattered = ["app" if i % 2 else "db" for i in range(POOL)]  # 20 runs of one address
    delta = compiler.update(estate(scattered))["h"]
    new = apply_delta(program, delta)
    script, after = render_update(program, new, layout, delta)
    assert ranged_names(after) == set()
    lines = script.splitlines()
    [added] = [x for x in lines if x.startswith("add set")]
    [dropped] = [x for x in lines if x.startswith("delete set")]
    hashed = added.split()[4]
    assert hashed.endswith("_4") and dropped.endswith(f"{hashed}_r")
    assert "flags interval" not in added and "10.0.1.40" in added
    flushed = [x for x in lines if x.startswith("flush chain")]
    assert flushed and lines.index(added) < lines.index(flushed[0]) < lines.index(dropped)
    rules = [x for x in lines if x.startswith("add rule") and "tier=app" not in x]
    assert any(f"@{hashed} " in x for x in rules)
    assert not any(f"@{hashed}_r" in x for x in rules)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(["app"] * 7 + ["db"]), min_size=POOL, max_size=POOL),
    st.lists(
        st.lists(st.integers(min_value=0, max_value=POOL - 1), min_size=1, max_size=12),
        min_size=1,
        max_size=4,
    ),
)
def test_updates_keep_the_sets_and_counts_of_a_fresh_load(
    tiers: list[str], steps: list[list[int]]
) -> None:
    """After any sequence of retags, the layout's counts and choices are a fresh layout's,
    and the element commands leave nft's sets holding exactly what a load would put there."""
    compiler = Compiler(estate(tiers))
    program: Program = compiler.program("h")
    layout = layout_for(program, "t")
    sets = applied({}, render_load(program, layout))
    for flipped in steps:
        for i in flipped:
            tiers[i] = "db" if tiers[i] == "app" else "app"
        delta = compiler.update(estate(tiers)).get("h")
        if delta is None:
            continue
        new = apply_delta(program, delta)
        script, layout = render_update(program, new, layout, delta)
        fresh = layout_for(new, "t")
        assert (layout.ranges, layout.ranged) == (fresh.ranges, fresh.ranged)
        sets = applied(sets, script)
        assert sets == applied({}, render_load(new, fresh))
        program = new
