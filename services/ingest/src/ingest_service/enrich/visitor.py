"""Cookieless visitor ids: a keyed hash of the day's secret salt, the site, and who is visiting."""

from __future__ import annotations

import hashlib


def visitor_id(salt: bytes, site_id: bytes, user_id: str, client_ip: str, user_agent: str) -> int:
    """A signed 64-bit id, stable for one visitor on one site for one UTC day.

    A signed-in ``user_id`` identifies the visitor when given; otherwise the client address and
    user agent do. Salts are deleted after two days, after which an id can no longer be linked to
    an address: raw addresses are never stored.
    """
    if user_id:
        material = b"u\x00" + site_id + user_id.encode()
    elif client_ip:
        material = b"a\x00" + site_id + client_ip.encode() + b"\x00" + user_agent.encode()
    else:
        return 0
    digest = hashlib.blake2b(material, key=salt, digest_size=8).digest()
    value = int.from_bytes(digest, "big", signed=True)
    return value or 1
