"""PLACEHOLDER — being written (validation)."""
from __future__ import annotations

from ._config import Config
from ._manifest import Document

NATIVE_KINDS: frozenset[str] = frozenset()


def validate(documents: list[Document]) -> Config:
    raise NotImplementedError
