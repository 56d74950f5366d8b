"""The process's options and rules loading, without root: bad input exits 2 naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagwall.l7fw import Mode, Setup, load_rules, main, render_table


def test_a_bad_rules_file_exits_2_naming_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("deny:\n- {name: x, path_prefix: admin}\n- {name: y, query_regex: '('}\n")
    argv = ["--mode", "in-network", "--left", "a", "--right", "b", "--rules", str(rules)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{rules}: deny[0].path_prefix: 'admin': must start with '/'" in err
    assert f"{rules}: deny[1].query_regex: '('" in err


def test_a_rules_file_in_yaml(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("deny:\n- name: no-backup\n  path_regex: '\\.bak$'\n")
    assert [rule.name for rule in load_rules(str(rules)).deny] == ["no-backup"]
    assert [rule.name for rule in load_rules(None).deny] == ["no-admin", "sqli"]


def test_the_table_of_each_mode() -> None:
    routed = render_table(Setup(Mode.IN_NETWORK, "l", "r", ports=(8080, 80)))
    assert 'iifname "l" oifname "r" meta l4proto tcp tcp dport { 80, 8080 } jump inspect' in routed
    bridged = render_table(Setup(Mode.TRANSPARENT, "l", "r"))
    assert "    meta l4proto tcp tcp dport { 80, 8080 } jump inspect" in bridged
    assert bridged.startswith("table inet tagwall_l7fw {}\ndelete table inet tagwall_l7fw\n")
