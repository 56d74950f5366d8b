"""Names of everything a lab creates: namespaces, interfaces, its state directory.

Every name is derived from the lab name, so ``down`` finds a lab's leftovers without its state
file.  The lab name is also the namespace prefix: ``twlab`` makes ``twlab-h-host-1``,
``twlab-w-shop-web-prod`` and ``twlab-fabric``.  Lab names are ``twlab`` plus up to eight
lowercase letters or digits, so two labs never share a prefix (``twlab-`` vs ``twlab2-``) and
no lab prefix matches another tool's namespaces.

Encodings (worked examples):

- namespace: ``<lab>-h-<host>`` / ``<lab>-w-<workload>``, where ``/`` (in pod names) becomes
  ``_``, which names cannot contain, so the mapping is one to one: ``shop/web-1`` →
  ``twlab-w-shop_web-1``.  Names over 200 characters are cut and end in 8 hex digits of a
  SHA-256 of the whole name.
- interface (Linux: at most 15 bytes): ``tw-`` plus the workload name when it fits in 12
  characters, else its first 7 characters, ``-`` and 4 hex digits of its SHA-256:
  ``shop-web-prod`` → ``tw-shop-we-e2e5``.  Only the workload side keeps the manifest's
  interface name (``eth0``).  Short names can clash in theory; the planner checks.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "DEFAULT_LAB",
    "FABRIC_BRIDGE",
    "FABRIC_INTERFACE",
    "LAB_NAME_RE",
    "STATE_ROOT",
    "WORKLOAD_INTERFACE_PREFIX",
    "check_lab_name",
    "default_state_dir",
    "fabric_namespace",
    "fabric_port",
    "host_interface",
    "host_namespace",
    "interface_alias",
    "namespace_prefix",
    "workload_interface",
    "workload_namespace",
]

DEFAULT_LAB = "twlab"
LAB_NAME_RE = re.compile(r"twlab[a-z0-9]{0,8}")
# /run is a tmpfs like /run/netns: a reboot clears a lab's files together with its namespaces.
STATE_ROOT = "/run/tagwall-lab"
# Agents enforce on the host-side interfaces matching ``tw-*`` (``--workload-interfaces``).
WORKLOAD_INTERFACE_PREFIX = "tw-"
FABRIC_INTERFACE = "fabric"  # a host's leg into the fabric; never matches tw-*
FABRIC_BRIDGE = "br-fabric"

_IFNAMSIZ = 15  # Linux interface names: 15 bytes plus the terminating NUL
_NAMESPACE_MAX = 200  # /run/netns/<name>; NAME_MAX is 255, and the prefix needs room
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_IFNAME_OK = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def check_lab_name(lab: str) -> str:
    """Return ``lab`` if it is a valid lab name, else raise ``ValueError`` saying what is."""
    if LAB_NAME_RE.fullmatch(lab) is None:
        raise ValueError(
            f"lab name {lab!r} must be 'twlab' followed by up to 8 lowercase letters or digits "
            "(e.g. twlab, twlab2): it is the prefix of every namespace the lab makes"
        )
    return lab


def namespace_prefix(lab: str) -> str:
    return f"{lab}-"


def default_state_dir(lab: str) -> str:
    return f"{STATE_ROOT}/{lab}"


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def _fit(name: str, width: int, digest_length: int) -> str:
    """``name`` made safe for a file or interface name and at most ``width`` characters.

    ``/`` becomes ``_``: one to one, because valid tagwall names never contain ``_``.  Other
    unsafe characters or too long a name give a cut name ending in ``-`` and a digest of the
    whole name.
    """
    safe = name.replace("/", "_")
    if len(safe) <= width and _UNSAFE.search(safe) is None:
        return safe
    cut = _UNSAFE.sub("_", safe)[: width - digest_length - 1]
    return f"{cut}-{_digest(name, digest_length)}"


def host_namespace(lab: str, host: str) -> str:
    return f"{lab}-h-{_fit(host, _NAMESPACE_MAX, 8)}"


def workload_namespace(lab: str, workload: str) -> str:
    return f"{lab}-w-{_fit(workload, _NAMESPACE_MAX, 8)}"


def fabric_namespace(lab: str) -> str:
    return f"{lab}-fabric"


def host_interface(workload: str, index: int = 0) -> str:
    """The host side of a workload's ``index``-th wired interface: ``tw-…``."""
    key = workload if index == 0 else f"{workload}#{index}"
    return WORKLOAD_INTERFACE_PREFIX + _fit(key, _IFNAMSIZ - len(WORKLOAD_INTERFACE_PREFIX), 4)


def interface_alias(workload: str, interface: str) -> str:
    """The alias of the host side of a workload's interface, ``tagwall:fw-a/left``: the
    contract by which the agent's data path finds a service's ports
    (``tagwall.datapath._steering.interface_alias``, which the lab may not import)."""
    return f"tagwall:{workload}/{interface}"


def fabric_port(kind: str, owner: str, index: int = 0) -> str:
    """A bridge port in the fabric namespace: ``h-<host>`` or ``x-<external workload>``."""
    key = owner if index == 0 else f"{owner}#{index}"
    return f"{kind}-" + _fit(key, _IFNAMSIZ - len(kind) - 1, 4)


def workload_interface(manifest_name: str, index: int, taken: set[str]) -> str:
    """The workload side of an interface: the manifest's name (``eth0``) when Linux accepts
    it and it is not ``taken`` yet, else the first free ``eth<n>`` from ``eth<index>``."""
    if (
        _IFNAME_OK.fullmatch(manifest_name)
        and manifest_name not in {"lo", ".", ".."}
        and manifest_name not in taken
    ):
        return manifest_name
    n = index
    while f"eth{n}" in taken:
        n += 1
    return f"eth{n}"
