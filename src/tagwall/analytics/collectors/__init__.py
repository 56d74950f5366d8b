"""Flow collectors' decoders: exporters' packets (bytes) → :class:`~tagwall.analytics.FlowBatch`.

Owns the decoding of IPFIX (RFC 7011), NetFlow v5 and v9 (RFC 3954), sFlow v5 and syslog
firewall lines, and the template state those protocols need per exporter.  It is pure: it
imports no store, no asyncio and no socket.  The UDP server that receives packets and the
store that keeps the batches live elsewhere and call in here.

Every decoder keeps one contract (see ``_base``): ``decode(packet, exporter, received_ms)``
returns a :class:`Decoded` or raises :class:`DecodeError`, never another exception, for any
bytes; ``decode_many`` does the same for many packets of one exporter at a time, in fewer,
larger batches, given as ``bytes`` or as a :class:`Burst` (datagrams in a receive buffer,
which the IPFIX decoder reads without a Python step per datagram); ``statistics()`` returns
a frozen :class:`DecoderStatistics`.

:data:`DECODERS` names each protocol's decoder class, :data:`DEFAULT_PORTS` its UDP port:
``ipfix`` 4739, ``netflow`` 2055 (v5 and v9 told apart by the version field), ``sflow``
6343, ``syslog`` 514.
"""

from collections.abc import Mapping

from ._base import Burst, Decoded, DecodeError, Decoder, DecoderStatistics, SyslogMessage
from .ipfix import IpfixDecoder
from .netflow import Netflow5Decoder, Netflow9Decoder, NetflowDecoder
from .sflow import SflowDecoder
from .syslog import SyslogDecoder

__all__ = [
    "DECODERS",
    "DEFAULT_PORTS",
    "Burst",
    "DecodeError",
    "Decoded",
    "Decoder",
    "DecoderStatistics",
    "IpfixDecoder",
    "Netflow5Decoder",
    "Netflow9Decoder",
    "NetflowDecoder",
    "SflowDecoder",
    "SyslogDecoder",
    "SyslogMessage",
]

# Protocol name → the decoder class for what arrives on its port.
DECODERS: Mapping[str, type[Decoder]] = {
    "ipfix": IpfixDecoder,
    "netflow": NetflowDecoder,  # v5 and v9 on one port, told apart by the version field
    "sflow": SflowDecoder,
    "syslog": SyslogDecoder,
}

# Protocol name → its well-known UDP port.
DEFAULT_PORTS: Mapping[str, int] = {"ipfix": 4739, "netflow": 2055, "sflow": 6343, "syslog": 514}
