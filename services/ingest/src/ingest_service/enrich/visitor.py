"""Visitor ids: keyed hashes of who is visiting, daily for anonymous visitors, stable for signed-in ones."""

from __future__ import annotations

import hashlib

# BLAKE2b personalisation of identified ids. Anonymous ids keep the parameters they always had
# (none), so that they did not change when identified ids were added; two hashes that differ in
# key, personalisation and input prefix are unrelated functions, so an identified and an anonymous
# id collide no more often than any two 64-bit random values (about 2^-64 per pair).
_IDENTIFIED = b"analytics.user.1"


def _signed(digest: bytes) -> int:
    # 0 means "no visitor" in the events table: the one 64-bit value no visitor may have.
    return int.from_bytes(digest, "big", signed=True) or 1


def anonymous_visitor_id(salt: bytes, site_id: bytes, client_ip: str, user_agent: str) -> int:
    """A signed 64-bit id, stable for one address and user agent on one site for one UTC day.

    ``salt`` is the day's secret salt. Salts are deleted after two days, after which an id can no
    longer be linked to an address: raw addresses are never stored. 0 when there is no address.
    """
    if not client_ip:
        return 0
    material = b"a\x00" + site_id + client_ip.encode() + b"\x00" + user_agent.encode()
    return _signed(hashlib.blake2b(material, key=salt, digest_size=8).digest())


def identified_visitor_id(secret: bytes, site_id: bytes, user_id: str) -> int:
    """A signed 64-bit id, the same for one ``user_id`` on one site on every day.

    ``secret`` is the site's identity secret, which never rotates. Without it the id cannot be
    recomputed from a guessed user_id, so it tells nothing about the user_id it came from.
    """
    material = b"u\x00" + site_id + user_id.encode()
    return _signed(hashlib.blake2b(material, key=secret, digest_size=8, person=_IDENTIFIED).digest())
