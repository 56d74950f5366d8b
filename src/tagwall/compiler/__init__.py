"""The compiler: intent → one ``Program`` per host, and per-host ``ProgramDelta``s as intent
changes (DESIGN §3: never a cartesian product).

Pipeline, in the words of cilium's ``resolve.go``: **resolve** endpoint forms into global
address sets through a tag index (``_index.py``), **distill** per host the policy-set blocks
that apply to its local workloads (both in ``_distill.py``), trimming each host's rules, sets
and tag maps to what its local workloads can match (``_trim.py``), **diff** new intent into
deltas for the hosts it affects (``Compiler.update`` and its fast paths in ``_compile.py``,
per-host snapshots, deltas and re-tests in ``_deliver.py``, generic ``_diff.py``).
``Program`` types live here (``_program.py``); data paths import them, never the reverse.

Programs and deltas travel as JSON (``_wire.py``).

Pure: imports only ``tagwall.model``; no I/O.
"""

from ._compile import Compiler, compile_program
from ._diff import apply_delta, diff_programs
from ._program import (
    AddressSet,
    Block,
    ChainKey,
    CompiledRule,
    CompiledService,
    LocalInterface,
    LocalService,
    Peer,
    PortElement,
    Program,
    ProgramDelta,
    RemoteService,
    SetDelta,
)
from ._wire import (
    WIRE_VERSION,
    delta_from_wire,
    delta_to_wire,
    program_from_wire,
    program_to_wire,
)

__all__ = [
    "WIRE_VERSION",
    "AddressSet",
    "Block",
    "ChainKey",
    "CompiledRule",
    "CompiledService",
    "Compiler",
    "LocalInterface",
    "LocalService",
    "Peer",
    "PortElement",
    "Program",
    "ProgramDelta",
    "RemoteService",
    "SetDelta",
    "apply_delta",
    "compile_program",
    "delta_from_wire",
    "delta_to_wire",
    "diff_programs",
    "program_from_wire",
    "program_to_wire",
]
