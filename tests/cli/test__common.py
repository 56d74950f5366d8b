"""``_common``: reading manifests, output formats, error reports, the REST client."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest

from tagwall.cli._common import Client, CliError, OutputFormat, emit, read_documents, report
from tagwall.errors import Problem, ValidationError

PROJECT = "apiVersion: tagwall/v1\nkind: Project\nmetadata: {name: %s}\n"


def test_directories_are_read_recursively_in_path_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.yml").write_text(PROJECT % "two")
    (tmp_path / "a.yaml").write_text(PROJECT % "one")
    (tmp_path / "c.json").write_text(json.dumps([{"kind": "Project", "metadata": {"name": "x"}}]))
    (tmp_path / "notes.txt").write_text("not a manifest")
    docs = read_documents([str(tmp_path)])
    assert [d.name for d in docs] == ["one", "two", "x"]
    assert docs[1].where == f"{tmp_path / 'b' / 'two.yml'}#0"


def test_stdin_is_named_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PROJECT % "p" + "---\n" + PROJECT % "q"))
    assert [d.where for d in read_documents(["-"])] == ["<stdin>#0", "<stdin>#1"]


def test_problems_of_every_file_are_reported_together(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("a: [")
    (tmp_path / "two.yaml").write_text("- just a list item\n")
    with pytest.raises(ValidationError) as caught:
        read_documents([str(tmp_path)])
    assert [p.source.split("/")[-1] for p in caught.value.problems] == ["one.yaml", "two.yaml#0"]


def test_no_files_or_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CliError, match="use -f FILE"):
        read_documents([])
    with pytest.raises(CliError, match=r"no \*\.yaml"):
        read_documents([str(tmp_path)])


def test_json_output_is_one_json_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert emit({"a": {"b": True}}, OutputFormat.JSON)
    assert json.loads(capsys.readouterr().out) == {"a": {"b": True}}
    assert not emit({"a": 1}, OutputFormat.TABLE)
    assert capsys.readouterr().out == ""


def test_report_prints_every_problem_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    problem = Problem(
        "not an IP address",
        path="spec.interfaces[0].ips[0]",
        kind="Workload",
        name="w",
        source="f.yaml#2",
        value="10.0.0.300",
    )
    report(ValidationError([problem]))
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "f.yaml#2 Workload/w spec.interfaces[0].ips[0] = '10.0.0.300': not an IP" in (
        captured.err
    )


def _answer(status: int, body: object) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers={"content-type": "application/json"})

    return httpx.MockTransport(handler)


def test_problem_json_becomes_problems_naming_the_users_documents(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(PROJECT % "p" + "---\n" + PROJECT % "q")
    documents = read_documents([str(tmp_path / "w.yaml")])
    body = {
        "title": "invalid input",
        "status": 422,
        "detail": "...",
        "problems": [
            {
                "reason": "bad",
                "source": "<api>#1",
                "kind": "Project",
                "name": "q",
                "path": "spec.tags",
                "allowed": ["x"],
            }
        ],
    }
    client = Client("http://tw.test", transport=_answer(422, body))
    with client, pytest.raises(CliError) as caught:
        client.request("POST", "/apply", json_body=[], documents=documents)
    assert caught.value.message == "invalid input (HTTP 422, http://tw.test)"
    [problem] = caught.value.problems
    assert problem.source == f"{tmp_path / 'w.yaml'}#1"
    assert (problem.path, problem.allowed) == ("spec.tags", ("x",))


def test_server_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAGWALL_SERVER", raising=False)
    assert Client(None).server == "http://127.0.0.1:7080"
    monkeypatch.setenv("TAGWALL_SERVER", "tw.example:9000/")
    assert Client(None).server == "http://tw.example:9000"
    assert Client("https://x").server == "https://x"
