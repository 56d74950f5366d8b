"""Which rule decided a flow, as the kernel tells it: decision ids in ``ct mark`` and NFLOG
prefixes.  Pure: the renderer writes these statements, the agent's flow records read them.

Every rule of a host's program, per direction, has a *decision id*, 1 to ``0xfffd``
(``allocate``; kept while the data path runs, like matchTags ids, so an update never renumbers
a rule that stays); ``DECISION_ISOLATED`` is the application tier's isolation drop and
``DECISION_POSTURE`` the default posture.  A rule's verdict carries its id:

* allow (and redirect) — ``ct mark set ct mark and 0x0000ffff or 0x00070000`` before the
  verdict (``goto ingress`` at egress, ``accept`` at ingress) for id 7 at egress: the egress
  decision is the mark's high 16 bits, the ingress decision the low 16 (``and 0xffff0000 or
  0x00000007``).  A flow between two workloads of one host meets both walks and carries both
  halves; a half that stays 0 was not decided on this host.  Only a
  new flow's first packet reaches a rule (the rest are ``established``), so the mark is
  written once per flow and end, before conntrack confirms the entry: its NEW event carries
  it.  Worked example: ``ct mark 0x00070003`` = allowed at egress by decision 7, at ingress
  by decision 3.
* deny and reject — ``log group 29815 prefix "tw:e:7" drop``: a dropped packet makes no
  conntrack entry, so each one is sent to NFLOG group ``LOG_GROUP`` with the direction
  (``e``/``i``) and the id.  Not rate-limited here: the agent aggregates packets into flows.
* pass — nothing: it decides nothing.

The ct mark is tagwall's own in the host namespaces (matchTags uses the packet mark, which is
a different register).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model import Action, TrafficDirection

__all__ = [
    "DECISION_ISOLATED",
    "DECISION_NONE",
    "DECISION_POSTURE",
    "LOG_GROUP",
    "DecisionKey",
    "allocate_decisions",
    "decision_statement",
    "parse_log_prefix",
    "split_ct_mark",
]

LOG_GROUP = 0x7477  # "tw"
DECISION_NONE = 0  # not decided on this host at this end
DECISION_ISOLATED = 0xFFFE
DECISION_POSTURE = 0xFFFF
_MAX_DECISION = 0xFFFD
_LETTER = {TrafficDirection.EGRESS: "e", TrafficDirection.INGRESS: "i"}
_DIRECTION = {letter: d for d, letter in _LETTER.items()}

# (direction, the rule's counter comment): the rules one counter comment stands for decide
# alike (a ``<>`` rule's two entries share a name and a verdict).
DecisionKey = tuple[TrafficDirection, str]


def allocate_decisions(ids: dict[DecisionKey, int], keys: Iterable[DecisionKey]) -> None:
    """Give every key of ``keys`` that has none the lowest free ids, in sorted order."""
    missing = sorted(set(keys) - ids.keys(), key=lambda k: (k[0].value, k[1]))
    if not missing:
        return
    used = set(ids.values())
    free = (n for n in range(1, _MAX_DECISION + 1) if n not in used)
    for key in missing:
        n = next(free, None)
        if n is None:
            raise ValueError(f"a host program holds more than {_MAX_DECISION} rules")
        ids[key] = n


def decision_statement(action: Action, direction: TrafficDirection, decision: int) -> str:
    """The statements before a rule's verdict that report ``decision`` (may be empty)."""
    if action in (Action.ALLOW, Action.REDIRECT):
        if direction is TrafficDirection.EGRESS:
            return f"ct mark set ct mark and 0x0000ffff or {decision << 16:#010x}"
        return f"ct mark set ct mark and 0xffff0000 or {decision:#010x}"
    if action in (Action.DENY, Action.REJECT):
        return f'log group {LOG_GROUP} prefix "tw:{_LETTER[direction]}:{decision}"'
    return ""


def parse_log_prefix(prefix: str) -> tuple[TrafficDirection, int] | None:
    """``"tw:e:7"`` → (egress, 7); None for a prefix tagwall did not write."""
    parts = prefix.split(":")
    if len(parts) != 3 or parts[0] != "tw" or parts[1] not in _DIRECTION:
        return None
    if not parts[2].isdigit():
        return None
    return _DIRECTION[parts[1]], int(parts[2])


def split_ct_mark(mark: int) -> dict[TrafficDirection, int]:
    """The decisions a ct mark carries, by direction (``DECISION_NONE`` where undecided)."""
    return {TrafficDirection.EGRESS: mark >> 16 & 0xFFFF, TrafficDirection.INGRESS: mark & 0xFFFF}
