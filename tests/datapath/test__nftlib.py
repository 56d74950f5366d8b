"""``NftContext``: the libnftables binding acts in the namespace it was created in, from any
thread, and reports nft's refusals with nft's reason.  Privileged."""

from __future__ import annotations

import json
import subprocess
import threading

import pytest

from tagwall.datapath._nftlib import NftContext, NftError
from tagwall.errors import DatapathError

from .support import Topology, privileged

pytestmark = privileged


def tables_in(ns: str) -> list[str]:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-j", "list", "tables"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [item["table"]["name"] for item in json.loads(out)["nftables"] if "table" in item]


def test_a_context_keeps_its_namespace_from_any_thread(topo: Topology) -> None:
    ns = topo.namespaces["remote"]
    ctx = NftContext(ns)
    try:
        worker = threading.Thread(
            target=ctx.run, args=("add table inet twdp_probe",), kwargs={"operation": "probe"}
        )
        worker.start()
        worker.join()
        assert "twdp_probe" in tables_in(ns)
        assert "twdp_probe" not in tables_in(topo.host)
        listing = json.loads(ctx.run("list tables", operation="listing", json=True))
        assert {"family": "inet", "name": "twdp_probe"}.items() <= listing["nftables"][1][
            "table"
        ].items()
        assert ctx.run("list tables", operation="listing").startswith("table inet twdp_probe")
    finally:
        ctx.run("delete table inet twdp_probe", operation="cleanup")
        ctx.close()


def test_a_refusal_carries_nfts_reason(topo: Topology) -> None:
    ctx = NftContext(topo.host)
    try:
        with pytest.raises(DatapathError) as caught:
            ctx.run("add rule inet twdp_absent c accept", operation="adding a rule")
        err = caught.value
        assert isinstance(err, NftError)
        assert err.operation == "adding a rule"
        assert str(err) == (
            "nftables refused adding a rule: "
            "Error: Could not process rule: No such file or directory"
        )
        assert "twdp_absent" in err.message  # the raw text keeps nft's echo of the command
    finally:
        ctx.close()
    with pytest.raises(NftError, match="closed"):
        ctx.run("list tables", operation="listing")
