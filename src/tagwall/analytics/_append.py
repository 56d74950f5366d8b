"""The flow store's write path up to the writer thread: the endpoints rows point to,
``append`` (enrichment into a segment's rows), syslog messages, and agents' reports with their
progress.

``append`` runs in the caller's thread (collectors' decoding threads, the API): endpoint ids,
rule ids and Arrow columns for the whole batch at once, no per-record Python (in the ingest
benchmark ~45 ns per record: two endpoint lookups of ~15 ns, the rest Arrow), then queues the
rows for the writer thread (``_writer.py``).  It waits (``append``) or refuses
(``append_nowait``) while ``max_pending_rows`` are queued and not yet stored.

``Appender`` is ``FlowStore``'s appending half: ``FlowStore.__init__`` sets the attributes
declared on it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type hints

from ..model import Config
from ._batch import COLUMNS, FlowBatch, RuleRef
from ._enrich import Endpoint, Endpoints
from ._schema import SEGMENT_SCHEMA
from ._writer import Call, Rows
from .collectors import SyslogMessage

__all__ = ["Appender"]

_RULE_COLUMNS = ("src_rule", "dst_rule", "src_audit_rule", "dst_audit_rule")


class Appender:
    """The appending methods of ``FlowStore`` (see the module docstring)."""

    # Set by FlowStore.__init__ (its invariants are stated there).
    _lock: threading.Condition
    _queue: queue.SimpleQueue[Rows | Call | object]
    _known: list[Endpoint]
    _endpoints: Endpoints | None
    _rules: list[RuleRef]
    _rule_ids: dict[RuleRef, int]
    _max_pending: int
    _pending: int
    _batches: int
    _dropped: int

    def _check_open_locked(self) -> None:
        raise NotImplementedError  # FlowStore's

    def endpoints(self, config: Config) -> Endpoints:
        """This store's ``Endpoints``, seeded with its persisted table, updated to ``config``.

        Call it on every revision (it updates the same object); ``append`` takes only it.
        """
        with self._lock:
            if self._endpoints is None:
                self._endpoints = Endpoints(config, self._known)
                return self._endpoints
        self._endpoints.update(config)
        return self._endpoints

    def append(self, batch: FlowBatch, endpoints: Endpoints) -> None:
        """Accept ``batch``, waiting while ``max_pending_rows`` rows are pending."""
        self._accept(batch, endpoints, wait=True)

    def append_nowait(self, batch: FlowBatch, endpoints: Endpoints) -> bool:
        """Accept ``batch`` unless that would exceed ``max_pending_rows``; False (and the
        rows counted as dropped) when refused."""
        return self._accept(batch, endpoints, wait=False)

    def _accept(self, batch: FlowBatch, endpoints: Endpoints, *, wait: bool) -> bool:
        if endpoints is not self._endpoints:
            raise ValueError("append: endpoints must be the ones FlowStore.endpoints returned")
        n = len(batch)
        rows = Rows(self._arrow(batch, endpoints)) if n else None
        return self._enqueue(rows, n, batch.dropped, wait=wait)

    def _enqueue(self, rows: Rows | None, n: int, dropped: int, *, wait: bool) -> bool:
        """Queue ``rows`` (``n`` flow rows in one or more batches) for the writer."""
        with self._lock:
            self._check_open_locked()
            self._dropped += dropped
            while wait and self._pending and self._pending + n > self._max_pending:
                self._lock.wait()
                self._check_open_locked()
            if self._pending and self._pending + n > self._max_pending:
                self._dropped += n
                return False
            if rows is not None:
                self._pending += n
                self._batches += 1 if n else 0
                self._queue.put(rows)
        return True

    def _arrow(self, batch: FlowBatch, endpoints: Endpoints) -> pa.Table:
        """The batch as a segment's rows (rule indexes → rule ids, ends → endpoints)."""
        with self._lock:
            ids = [self._rule_ids.get(r) or self._new_rule_locked(r) for r in batch.rules]
        remap = np.array([*ids, 0], np.int32)  # index -1 picks the trailing 0: no rule
        columns = {name: pa.array(batch.columns[name]) for name in COLUMNS}
        # A batch without rules (every collector's) has no rule at all: zeros, without the
        # fancy index (12 ns per record for the four columns).
        none = pa.array(np.zeros(len(batch), np.int32)) if not ids else None
        for name in _RULE_COLUMNS:
            columns[name] = none if none is not None else pa.array(remap[batch.columns[name]])
        c = batch.columns
        columns["src_ep"] = pa.array(endpoints.lookup(c["src_hi"], c["src_lo"]))
        columns["dst_ep"] = pa.array(endpoints.lookup(c["dst_hi"], c["dst_lo"]))
        zeros = pa.array(np.zeros(len(batch), np.int8))
        columns["source"] = pa.DictionaryArray.from_arrays(zeros, [batch.source.value])
        columns["exporter"] = pa.DictionaryArray.from_arrays(zeros, [batch.exporter])
        columns["via"] = (
            pa.nulls(len(batch), pa.string())
            if batch.via is None
            else pa.array(batch.via, pa.string())
        )
        return pa.Table.from_arrays(list(columns.values()), schema=SEGMENT_SCHEMA)

    def _new_rule_locked(self, rule: RuleRef) -> int:
        self._rules.append(rule)
        self._rule_ids[rule] = len(self._rules)
        return len(self._rules)

    def append_messages(self, messages: Iterable[SyslogMessage]) -> None:
        """Accept syslog lines that carry no flow; stored with the next flush."""
        items = list(messages)
        if not items:
            return
        table = pa.table(
            {
                name: pa.array([getattr(m, name) for m in items])
                for name in SyslogMessage.__dataclass_fields__
            }
        )
        with self._lock:
            self._check_open_locked()
            self._queue.put(Rows(pa.table({}), table))

    def append_agent_reports(
        self,
        batches: Sequence[FlowBatch],
        endpoints: Endpoints,
        host: str,
        spool: str,
        stored_through: int,
    ) -> None:
        """Accept ``batches`` together with the record that ``host``'s spool ``spool`` is
        stored up to ``stored_through``: one flush commits both in one transaction (``flush``
        returns once it has).  A crash stores both or neither: never the rows without the
        progress (stored twice on the agent's resend) nor the progress without the rows."""
        if endpoints is not self._endpoints:
            raise ValueError("append: endpoints must be the ones FlowStore.endpoints returned")
        tables = [self._arrow(b, endpoints) for b in batches if len(b)]
        n = sum(t.num_rows for t in tables)
        table = pa.concat_tables(tables) if tables else pa.table({})
        rows = Rows(table, progress=(host, spool, stored_through))
        self._enqueue(rows, n, sum(b.dropped for b in batches), wait=True)
