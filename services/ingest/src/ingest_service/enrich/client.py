"""The client's address and country, trusting forwarding headers only from configured proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values if value.strip())


def peer_address(peer: str) -> Address | None:
    """Parses grpc's peer string: ``ipv4:1.2.3.4:5678`` or ``ipv6:[::1]:5678``."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        host = rest.rpartition(":")[0]
    elif kind == "ipv6":
        host = rest.rpartition(":")[0].strip("[]")
    else:
        return None
    return _address(host)


def _address(value: str) -> Address | None:
    text = value.strip().strip('"')
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


class ClientResolver:
    """Finds the client address: the peer, or, if the peer is a trusted proxy, the right-most
    ``X-Forwarded-For`` entry that is not itself a trusted proxy.

    Taking the first entry blindly would let any client claim any address.
    """

    def __init__(self, trusted_proxies: Sequence[str], country_header: str) -> None:
        self._trusted = parse_networks(trusted_proxies)
        self.country_header = country_header.lower()

    def trusted(self, address: Address) -> bool:
        return any(address in network for network in self._trusted)

    def resolve(self, peer: str, forwarded_for: str | None) -> tuple[Address | None, bool]:
        """Returns (client address, whether the request came through a trusted proxy)."""
        address = peer_address(peer)
        if address is None or not self.trusted(address):
            return address, False
        if not forwarded_for:
            return address, True
        hops = [hop for hop in forwarded_for.split(",") if hop.strip()]
        client = address
        for hop in reversed(hops):
            parsed = _address(hop)
            if parsed is None:
                break
            client = parsed
            if not self.trusted(parsed):
                break
        return client, True

    @staticmethod
    def country(value: str | None) -> str:
        """ISO 3166-1 alpha-2 code from the trusted header, or '' (unknown, Tor, anonymous)."""
        if not value:
            return ""
        code = value.strip().upper()
        if (
            len(code) != 2
            or not code.isascii()
            or not code.isalpha()
            or code in ("XX", "T1", "A1", "A2", "O1")
        ):
            return ""
        return code
