"""Endpoints: addresses become endpoint ids, a retagged workload becomes a new endpoint and
the old one keeps its tags, and persisted endpoints keep their ids."""

from __future__ import annotations

import numpy as np
import pytest

from tagwall.analytics import Endpoint, Endpoints, ip_columns
from tagwall.model import Tags

from .flows_support import estate

WEB = {"application": "shop", "tier": "web"}
DB = {"application": "shop", "tier": "db"}


def ids(endpoints: Endpoints, addresses: list[str]) -> list[int]:
    hi, lo = ip_columns(addresses)
    out = endpoints.lookup(hi, lo)
    assert out.dtype == np.int32
    return [int(x) for x in out]


def test_addresses_map_to_their_workload_and_unknown_to_zero() -> None:
    endpoints = Endpoints(estate({"web-1": WEB, "db-1": DB}))
    web, db, none = ids(endpoints, ["10.0.0.1", "10.0.0.2", "192.0.2.9"])
    assert none == 0
    assert {endpoints.endpoint(web).workload, endpoints.endpoint(db).workload} == {"web-1", "db-1"}
    assert endpoints.endpoint(web).project == "shop"
    assert endpoints.endpoint(web).tags == Tags.of(
        {**{k: [v] for k, v in WEB.items()}, "project": ["shop"]}
    )
    assert ids(endpoints, []) == []


def test_a_retagged_workload_gets_a_new_endpoint_and_the_old_one_keeps_its_tags() -> None:
    endpoints = Endpoints(estate({"web-1": WEB, "db-1": DB}))
    before = ids(endpoints, ["10.0.0.1", "10.0.0.2"])
    endpoints.update(estate({"web-1": {**WEB, "tier": "edge"}, "db-1": DB}))
    after = ids(endpoints, ["10.0.0.1", "10.0.0.2"])
    assert after[1] == before[1]  # unchanged workload, same endpoint
    assert after[0] not in before
    assert endpoints.endpoint(before[0]).tags.value("tier") == "web"
    assert endpoints.endpoint(after[0]).tags.value("tier") == "edge"
    assert [e.id for e in endpoints.since(2)] == [after[0]]


def test_an_unchanged_config_is_a_no_op_and_removed_workloads_become_unknown() -> None:
    config = estate({"web-1": WEB, "db-1": DB})
    endpoints = Endpoints(config)
    endpoints.update(config)
    assert len(endpoints) == 2
    endpoints.update(estate({"web-1": WEB}))
    assert ids(endpoints, ["10.0.0.1", "10.0.0.2"])[1] == 0


def test_known_endpoints_keep_their_ids_across_restarts() -> None:
    config = estate({"web-1": WEB, "db-1": DB})
    first = Endpoints(config)
    again = Endpoints(config, known=first.since(0))
    assert ids(again, ["10.0.0.1", "10.0.0.2"]) == ids(first, ["10.0.0.1", "10.0.0.2"])
    assert len(again) == 2


def test_known_endpoints_must_be_numbered_from_one() -> None:
    stray = Endpoint(5, "web-1", "shop", Tags())
    with pytest.raises(ValueError, match="id 5"):
        Endpoints(estate({}), known=[stray])


def test_ipv6_addresses_sharing_their_low_half_stay_apart() -> None:
    """Two /64s with the same interface id take the 16-byte key path."""
    config = estate(
        {"a": WEB, "b": DB, "c": DB},
        ips={"a": ["2001:db8:1::5"], "b": ["2001:db8:2::5"], "c": ["10.0.0.3"]},
    )
    endpoints = Endpoints(config)
    a, b, c, none = ids(endpoints, ["2001:db8:1::5", "2001:db8:2::5", "10.0.0.3", "2001:db8:3::5"])
    assert [endpoints.endpoint(x).workload for x in (a, b, c)] == ["a", "b", "c"]
    assert none == 0
