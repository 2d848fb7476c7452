"""Which IP addresses an audio fetch may connect to: public ones, including every IPv6 disguise of IPv4.

An IPv6 address can reach an IPv4 host through a translator or tunnel that takes the IPv4 address
from the IPv6 one. ``is_global`` alone does not see that (``::10.0.0.1`` and ``64:ff9b::a00:1`` are
"global" to Python 3.11), so each such form is decoded and the IPv4 inside must be public too:

=========================  ===============  ============================================================
form                       prefix           decision
=========================  ===============  ============================================================
IPv4-mapped                ``::ffff:0:0/96``  the embedded IPv4 decides (dual-stack sockets connect to it)
IPv4-compatible            ``::/96``          refused: deprecated (RFC 4291), nothing legitimate uses it
NAT64 well-known prefix    ``64:ff9b::/96``   the embedded IPv4 decides: an IPv6-only network with DNS64
                                              reaches every IPv4-only server this way, so a public IPv4
                                              behind it is allowed
NAT64 local-use            ``64:ff9b:1::/48`` refused: where the IPv4 sits depends on the operator's prefix
                                              length (RFC 8215), and the prefix is local by definition
6to4                       ``2002::/16``      the IPv4 in bits 16-47 decides
Teredo                     ``2001::/32``      refused: not globally reachable (IANA); its server and
                                              (inverted) client IPv4 are checked as well
=========================  ===============  ============================================================

``BRIDGE_FETCH_ALLOW_HOSTS`` overrides this (``fetch.HostPolicy``); a listed IPv4 address also allows
its IPv4-mapped form, which dual-stack resolvers return.
"""

from __future__ import annotations

import ipaddress

__all__ = ["IPAddress", "IPNetwork", "embedded_ipv4", "is_public"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")
_ALWAYS_REFUSED = (_IPV4_COMPATIBLE, _NAT64_LOCAL_USE, _TEREDO)


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 ``address`` can lead to through a translator or tunnel."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _IPV4_COMPATIBLE or address in _NAT64_WELL_KNOWN:
        return [low32]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        server, client = address.teredo  # the client's address is stored inverted
        return [server, client]
    return []


def _is_public_ipv4(address: ipaddress.IPv4Address) -> bool:
    return address.is_global and not address.is_multicast


def is_public(address: IPAddress) -> bool:
    """True if ``address`` and every IPv4 it can lead to are globally routable unicast addresses."""
    if isinstance(address, ipaddress.IPv4Address):
        return _is_public_ipv4(address)
    if address.scope_id or any(address in network for network in _ALWAYS_REFUSED):
        return False
    embedded = embedded_ipv4(address)
    if embedded:  # the IPv4 decides: "::ffff:8.8.8.8" is not global to Python, yet reaches 8.8.8.8
        return all(_is_public_ipv4(inner) for inner in embedded)
    return address.is_global and not address.is_multicast
