"""Names the lab derives: the lab prefix, namespaces, interfaces (``tagwall.lab._names``)."""

from __future__ import annotations

import pytest

from tagwall.lab._names import (
    check_lab_name,
    default_state_dir,
    fabric_port,
    host_interface,
    host_namespace,
    namespace_prefix,
    workload_interface,
    workload_namespace,
)


@pytest.mark.parametrize("lab", ["twlab", "twlab2", "twlabt0a1b2c", "twlab12345678"])
def test_valid_lab_names(lab: str) -> None:
    assert check_lab_name(lab) == lab
    assert namespace_prefix(lab) == f"{lab}-"
    assert default_state_dir(lab) == f"/run/tagwall-lab/{lab}"


@pytest.mark.parametrize("lab", ["", "lab", "twdp", "twlab-x", "twlabX", "twlab123456789", "tw"])
def test_lab_names_that_could_touch_other_namespaces_are_refused(lab: str) -> None:
    """Only ``twlab…`` names: no lab prefix matches another tool's (``twdp-``) namespaces,
    and ``-`` is refused so that one lab's prefix is never a prefix of another's."""
    with pytest.raises(ValueError, match="twlab"):
        check_lab_name(lab)


def test_namespaces_keep_names_readable_and_map_pod_slashes_one_to_one() -> None:
    assert host_namespace("twlab", "host-1") == "twlab-h-host-1"
    assert workload_namespace("twlab", "shop-web-prod") == "twlab-w-shop-web-prod"
    # Valid names never contain "_", so "shop/web-1" and "shop-web-1" stay distinct.
    assert workload_namespace("twlab", "shop/web-1") == "twlab-w-shop_web-1"
    assert workload_namespace("twlab", "shop/web-1") != workload_namespace("twlab", "shop.web-1")


def test_long_names_are_cut_with_a_digest_and_stay_distinct() -> None:
    a, b = "a" * 252 + "1", "a" * 252 + "2"
    ns_a, ns_b = workload_namespace("twlab", a), workload_namespace("twlab", b)
    assert ns_a != ns_b
    assert len(ns_a) <= 255 - len("/run/netns/") and ns_a.startswith("twlab-w-aaaa")


@pytest.mark.parametrize(
    ("workload", "index", "expected"),
    [
        ("web-1", 0, "tw-web-1"),
        ("shop/web-1", 0, "tw-shop_web-1"),
        ("crm-web-prod", 0, "tw-crm-web-prod"),  # exactly 15 bytes: kept whole
        ("shop-web-prod", 0, "tw-shop-we-e2e5"),
    ],
)
def test_host_interfaces_fit_linux_and_match_the_agents_glob(
    workload: str, index: int, expected: str
) -> None:
    assert host_interface(workload, index) == expected


def test_more_interfaces_of_one_workload_get_distinct_names() -> None:
    names = {host_interface("fw-a", n) for n in range(3)}
    assert len(names) == 3
    assert all(len(n) <= 15 and n.startswith("tw-") for n in names)
    assert fabric_port("h", "host-1") == "h-host-1"
    assert len(fabric_port("x", "a-very-long-external-name")) <= 15


def test_workload_side_keeps_the_manifest_name_when_linux_takes_it() -> None:
    assert workload_interface("eth0", 0, set()) == "eth0"
    assert workload_interface("ext", 0, set()) == "ext"
    # Too long, unusable or already taken: the first free eth<n>.
    assert workload_interface("a-name-longer-than-15", 1, set()) == "eth1"
    assert workload_interface("lo", 0, set()) == "eth0"
    assert workload_interface("has space", 0, {"eth0"}) == "eth1"
    assert workload_interface("eth0", 1, {"eth0"}) == "eth1"
