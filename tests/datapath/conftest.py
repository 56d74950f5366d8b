"""Fixtures of the nftables data-path tests: one real topology per session (support.py), and
a fresh ``NftDatapath`` in its host namespace per test, removed afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tagwall.datapath import NftDatapath, nft_cleanup

from .support import WHY_NOT, Topology, topology


@pytest.fixture(scope="session")
def topo() -> Iterator[Topology]:
    if WHY_NOT is not None:
        pytest.skip(WHY_NOT)
    with topology() as t:
        yield t


@pytest.fixture
def datapath(topo: Topology) -> Iterator[NftDatapath]:
    topo.flush_conntrack()
    dp = NftDatapath(netns=topo.host)
    try:
        yield dp
    finally:
        dp.close()
        nft_cleanup(topo.host)
