"""PLACEHOLDER — being written (Kubernetes import)."""
from __future__ import annotations

from ._manifest import Document

KUBERNETES_KINDS: frozenset[str] = frozenset()


def translate(documents: list[Document]) -> list[Document]:
    return list(documents)
