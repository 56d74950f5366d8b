"""A minimal ctypes binding of ``libnftables.so.1``: one context, text commands in, text out.

Why it exists: libnftables runs a whole buffer of commands as one kernel transaction in
~0.2 ms, where ``nft -f`` as a subprocess costs ~13 ms (FIELD-NOTES "nftables from Python");
Debian's ``python3-nftables`` does not import in a venv and PyPI has no binding.

Namespaces: libnftables 1.0.6 opens its netlink socket once, in ``nft_ctx_new`` (measured: a
context created inside ``entered(ns)`` keeps acting on ``ns`` from any thread; the library
has no other ``mnl_socket_open`` call).  So only the creation runs inside the namespace.  One
caveat: nft resolves ``iif``/``oif`` names through a fresh socket in the *calling* thread's
namespace; tagwall only uses ``iifname``/``oifname`` (string matches), which need no lookup.

A context is not thread-safe: callers serialise their calls (``NftDatapath`` holds a lock).
"""

from __future__ import annotations

import ctypes
import weakref

from .._netns import entered
from ..errors import DatapathError

__all__ = ["NftContext", "NftError"]

_OUTPUT_JSON = 1 << 4  # NFT_CTX_OUTPUT_JSON in nftables/libnftables.h


class NftError(DatapathError):
    """nftables refused a command buffer; nothing of the buffer was applied."""

    def __init__(self, operation: str, message: str) -> None:
        self.operation = operation  # what tagwall was doing, e.g. "the program of host-1"
        self.message = message  # nft's own error text, as nft printed it
        super().__init__(f"nftables refused {operation}: {_reasons(message)}")


def _reasons(message: str) -> str:
    """The ``Error:`` lines of nft's text, each once.  For a buffer, nft 1.0.6 echoes the
    buffer's first line under every error with a caret at the right column of the wrong line,
    which only misleads, so those lines are left out."""
    errors = [line for line in message.splitlines() if line.startswith("Error:")]
    return "; ".join(dict.fromkeys(errors)) or message.strip()


def _library() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libnftables.so.1")
    except OSError as exc:
        raise NftError("to start", f"{exc} (install the Debian package libnftables1)") from exc
    ctx = ctypes.c_void_p
    lib.nft_ctx_new.argtypes, lib.nft_ctx_new.restype = [ctypes.c_uint32], ctx
    lib.nft_ctx_free.argtypes, lib.nft_ctx_free.restype = [ctx], None
    for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
        getattr(lib, name).argtypes, getattr(lib, name).restype = [ctx], ctypes.c_int
    lib.nft_ctx_output_get_flags.argtypes = [ctx]
    lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
    lib.nft_ctx_output_set_flags.argtypes = [ctx, ctypes.c_uint]
    lib.nft_ctx_output_set_flags.restype = None
    lib.nft_run_cmd_from_buffer.argtypes = [ctx, ctypes.c_char_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(lib, name).argtypes, getattr(lib, name).restype = [ctx], ctypes.c_char_p
    return lib


class NftContext:
    """One libnftables context bound to network namespace ``netns`` (None: the caller's)."""

    def __init__(self, netns: str | None = None) -> None:
        self._lib = _library()
        with entered(netns):
            handle = self._lib.nft_ctx_new(0)
        if not handle:
            raise NftError("to create a context", "nft_ctx_new returned NULL")
        self._ctx: int | None = handle
        self._lib.nft_ctx_buffer_output(handle)
        self._lib.nft_ctx_buffer_error(handle)
        self._finalizer = weakref.finalize(self, self._lib.nft_ctx_free, handle)

    def run(self, script: str, *, operation: str, json: bool = False) -> str:
        """Run ``script`` (one or more commands, one transaction); return nft's output.
        ``json`` asks for JSON output (listings).  Raises ``NftError`` naming ``operation``."""
        ctx = self._ctx
        if ctx is None:
            raise NftError(operation, "the nftables context is closed")
        flags = self._lib.nft_ctx_output_get_flags(ctx)
        if json:
            self._lib.nft_ctx_output_set_flags(ctx, flags | _OUTPUT_JSON)
        try:
            rc = self._lib.nft_run_cmd_from_buffer(ctx, script.encode())
            out = self._lib.nft_ctx_get_output_buffer(ctx) or b""
            err = self._lib.nft_ctx_get_error_buffer(ctx) or b""
        finally:
            if json:
                self._lib.nft_ctx_output_set_flags(ctx, flags)
        if rc != 0:
            raise NftError(operation, err.decode(errors="replace") or f"return code {rc}")
        return out.decode()

    def close(self) -> None:
        self._ctx = None
        self._finalizer()
