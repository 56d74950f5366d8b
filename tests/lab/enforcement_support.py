"""Helpers for the acceptance tests on real packets (``test_enforcement.py``,
``test_faults.py``, ``test_lab_differential.py``): a running lab with nftables agents whose
configuration a test replaces, waits on, probes and compares with the reference answer.

A ``RunningLab`` is built with ``tagwall.lab.up`` in this process (its controllers and agents
are real processes) and keeps the documents its controllers hold.  ``set_objects`` makes
the store hold exactly a new list of documents in one revision (a draft: stage every
create/replace and every delete, commit), then waits until every agent enforces it, as an
operator would with ``tagwall draft`` or ``tagwall apply`` plus ``tagwall delete``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tagwall._netns import NETNS_DIR
from tagwall.cli._common import read_documents
from tagwall.evaluator import reach
from tagwall.kinds import NAMESPACED_KUBERNETES_KINDS
from tagwall.lab import down, probe, read_state, up
from tagwall.lab._processes import is_running, lab_pids, log_tail
from tagwall.model import Document, load, parse_flow_service

Matrix = dict[str, dict[str, bool]]
Key = tuple[str, str | None, str]

# Generous: a loaded CI machine may take seconds where this one takes 0.1 s.
SYNC_TIMEOUT_S = 30.0
_POLL_S = 0.05


# -- documents --------------------------------------------------------------------------------


def documents(*paths: str | Path) -> list[Document]:
    """Every manifest of the files or directories (as ``tagwall -f`` reads them)."""
    return read_documents([str(p) for p in paths])


def yaml_documents(directory: Path, name: str, text: str) -> list[Document]:
    """Write ``text`` to ``directory/name`` and read it back as manifests."""
    path = directory / name
    path.write_text(text)
    return documents(path)


def as_documents(manifests: Sequence[Mapping[str, Any]], source: str) -> list[Document]:
    return [Document(dict(m), source, i) for i, m in enumerate(manifests)]


def key_of(doc: Document) -> Key:
    """(kind, project or namespace, name): what the store keys an object by."""
    meta = doc.body.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    scope = meta.get("project") or meta.get("namespace")
    if doc.kind in NAMESPACED_KUBERNETES_KINDS and not scope:
        scope = "default"
    return (doc.kind, str(scope) if scope else None, doc.name)


def expected(docs: Sequence[Document], service: str) -> Matrix:
    """The reference answer: what ``tagwall reach -f … --service S -o json`` prints."""
    return reach(load(list(docs)), parse_flow_service(service))


def denied(matrix: Matrix) -> set[tuple[str, str]]:
    return {(a, b) for a, row in matrix.items() for b, ok in row.items() if not ok}


def allowed_between_others(matrix: Matrix) -> set[tuple[str, str]]:
    """Allowed pairs of two different workloads (a self pair is always allowed)."""
    return {(a, b) for a, row in matrix.items() for b, ok in row.items() if ok and a != b}


def differences(got: Matrix, want: Matrix) -> list[str]:
    """Readable lines for the pairs where two matrices disagree (for assertion messages)."""
    out = [f"keys differ: {sorted(got)} vs {sorted(want)}"] if list(got) != list(want) else []
    for a, row in want.items():
        for b, ok in row.items():
            if got.get(a, {}).get(b) != ok:
                out.append(f"{a} → {b}: probe {got.get(a, {}).get(b)}, expected {ok}")
    return out


def assert_mixed(answers: Mapping[str, Matrix]) -> None:
    """A comparison is only worth something if the answers (of all services together) have
    both verdicts between different workloads: otherwise "nothing enforced" or "everything
    dropped" would pass."""
    verdicts = {
        ok for m in answers.values() for a, row in m.items() for b, ok in row.items() if a != b
    }
    assert verdicts == {True, False}, f"every pair of two workloads is {verdicts}: {list(answers)}"


# -- namespaces and processes -----------------------------------------------------------------


def namespaces_of(lab: str) -> set[str]:
    return {n for n in os.listdir(NETNS_DIR) if n.startswith(f"{lab}-")}


def cmdline(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [part.decode() for part in raw.split(b"\0") if part]


def kill_and_wait(pids: Iterable[int], sig: signal.Signals, timeout_s: float = 15.0) -> None:
    """Send ``sig`` to each pid and wait until none runs (children of this process are
    reaped by ``is_running``)."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    wait_until(lambda: not any(is_running(p) for p in pids), timeout_s, f"pids {pids} to exit")


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> float:
    """Poll ``condition`` until it is true; the seconds it took.  AssertionError at the
    timeout, naming ``what``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"no {what} within {timeout_s:g} s"
        time.sleep(_POLL_S)
    return time.monotonic() - started


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def log_lines(path: str | Path) -> list[str]:
    try:
        return Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


# -- a running lab ----------------------------------------------------------------------------


@dataclass
class RunningLab:
    """A lab that is up, and the documents its store holds (``objects``)."""

    name: str
    state_dir: Path
    objects: list[Document]
    revision: int = 0
    hosts: tuple[str, ...] = field(default=())

    # -- the record --------------------------------------------------------------------------

    def processes(self, role: str) -> dict[str, dict[str, Any]]:
        """name → {pid, url, log} of the lab's processes of ``role`` (as ``lab status -o
        json`` lists them)."""
        state = read_state(self.state_dir)
        assert state is not None
        return {p.name: p.as_dict() for p in state.processes if p.role == role}

    @property
    def urls(self) -> list[str]:
        return [str(p["url"]) for p in self.processes("controller").values()]

    def host_namespace(self, host: str) -> str:
        return f"{self.name}-h-{host}"

    def agent_log(self, host: str) -> str:
        return str(self.processes("agent")[host]["log"])

    # -- the control plane -------------------------------------------------------------------

    def agents(self, url: str | None = None) -> dict[str, Any]:
        """``GET /api/v1/agents`` of ``url`` (default: the first controller)."""
        response = httpx.get(f"{url or self.urls[0]}/api/v1/agents", timeout=5)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def set_objects(self, docs: Sequence[Document], url: str | None = None) -> int:
        """``commit`` ``docs``, then wait until every agent enforces them; the revision."""
        revision = self.commit(docs, url)
        self.wait_in_sync(url)
        return revision

    def commit(self, docs: Sequence[Document], url: str | None = None) -> int:
        """Make the store hold exactly ``docs``, in one revision, through controller ``url``
        (default: the first): a draft stages every object of ``docs`` and deletes every
        object it lacks, then is committed.  Returns the revision; does not wait."""
        url = url or self.urls[0]
        wanted = {key_of(d) for d in docs}
        gone = [k for k in dict.fromkeys(key_of(d) for d in self.objects) if k not in wanted]
        draft = f"t-{os.getpid()}-{time.monotonic_ns()}"
        with httpx.Client(base_url=f"{url}/api/v1", timeout=30) as http:
            _ok(http.post("/drafts", json={"name": draft}))
            try:
                _ok(http.post(f"/drafts/{draft}/apply", json=[dict(d.body) for d in docs]))
                for kind, scope, name in gone:
                    body = {"kind": kind, "name": name, "project": scope}
                    _ok(http.post(f"/drafts/{draft}/delete", json=body))
                committed = http.post(f"/drafts/{draft}/commit")
            except BaseException:
                http.delete(f"/drafts/{draft}")
                raise
            if not committed.is_success:
                http.delete(f"/drafts/{draft}")
            _ok(committed)
        self.objects = list(docs)
        self.revision = int(committed.json()["revision"])
        return self.revision

    def wait_in_sync(
        self,
        url: str | None = None,
        timeout_s: float = SYNC_TIMEOUT_S,
        *,
        reported_since: datetime | None = None,
    ) -> None:
        """Until controller ``url`` has compiled the store's revision and every host of the
        lab is connected with realized ≥ desired.  Fails early on a host that stays
        ``rejected``.

        ``reported_since``: also require each host's status to be written after that time
        (a status row written by a controller that is gone still reads as connected until it
        is 6 s old: docs/control.md)."""
        url = url or self.urls[0]
        started = time.monotonic()
        rejected_since: float | None = None
        with httpx.Client(base_url=f"{url}/api/v1", timeout=5) as http:
            while True:
                store = http.get("/revision").json()["revision"]
                body = http.get("/agents").json()
                items = {i["host"]: i for i in body["items"]}
                # A row may still say rejected until the controller has sent the next change
                # (which goes out whole) and written the new state: only a lasting refusal
                # fails early.
                rejected = [i for i in items.values() if i["state"] == "rejected"]
                if not rejected:
                    rejected_since = None
                elif rejected_since is None:
                    rejected_since = time.monotonic()
                else:
                    assert time.monotonic() - rejected_since < 3, f"refused: {rejected}"
                if body["revision"] >= store and all(
                    _in_sync(items.get(h), reported_since) for h in self.hosts
                ):
                    return
                if time.monotonic() - started > timeout_s:
                    tails = {h: log_tail(self.agent_log(h), 4) for h in self.hosts}
                    raise AssertionError(
                        f"not in sync within {timeout_s:g} s (store revision {store}): "
                        f"{body}; agent logs: {tails}"
                    )
                time.sleep(_POLL_S)

    # -- packets -----------------------------------------------------------------------------

    def forget_flows(self) -> None:
        """Empty the conntrack table of every host namespace (a clean start for a test that
        makes flows of its own)."""
        for host in self.hosts:
            subprocess.run(
                ["ip", "netns", "exec", self.host_namespace(host), "conntrack", "-F"],
                capture_output=True,
                check=True,
            )

    def probe(self, *services: str) -> dict[str, Matrix]:
        """Real attempts of each service between every ordered pair, the services side by
        side (each probe runs its own event loop in its own thread).  Conntrack is left as it
        is: ``lab probe`` itself must never ride on an earlier flow."""

        def one(service: str) -> Matrix:
            result = probe(parse_flow_service(service), lab=self.name, state_dir=self.state_dir)
            return result.matrix

        with ThreadPoolExecutor(max_workers=len(services)) as pool:
            return dict(zip(services, pool.map(one, services), strict=True))

    def assert_probe_equals_reach(
        self, services: Sequence[str], *, mixed: bool = True
    ) -> dict[str, Matrix]:
        """The probe of every service equals the reference evaluator over ``objects``;
        ``mixed``: the answers have allowed and denied pairs (``assert_mixed``).  Returns the
        answers."""
        probed = self.probe(*services)
        answers = {service: expected(self.objects, service) for service in services}
        for service, want in answers.items():
            got = probed[service]
            assert got == want, f"{service}: " + "; ".join(differences(got, want))
        if mixed:
            assert_mixed(answers)
        return answers


def _ok(response: httpx.Response) -> None:
    assert response.is_success, f"{response.request.method} {response.request.url}: " + (
        f"HTTP {response.status_code} {response.text[:2000]}"
    )


def _in_sync(item: Mapping[str, Any] | None, reported_since: datetime | None = None) -> bool:
    if item is None or not item["connected"] or item["realizedRevision"] is None:
        return False
    if reported_since is not None and datetime.fromisoformat(item["updated"]) < reported_since:
        return False
    desired = item["desiredRevision"]
    return desired is None or item["realizedRevision"] >= desired


@contextlib.contextmanager
def running_lab(
    docs: Sequence[Document], lab: str, state_dir: Path, *, controllers: int = 2
) -> Iterator[RunningLab]:
    """A lab of ``docs`` with nftables agents, taken down afterwards — leaving no namespace
    and no process, which the exit checks — even when the body fails."""
    try:
        state = up(list(docs), lab=lab, state_dir=state_dir, controllers=controllers)
        running = RunningLab(lab, state_dir, list(docs), hosts=tuple(h.name for h in state.hosts))
        yield running
    finally:
        down(lab=lab, state_dir=state_dir)
    assert namespaces_of(lab) == set()
    assert lab_pids(state_dir) == []
