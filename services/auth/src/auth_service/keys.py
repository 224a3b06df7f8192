"""API key format, generation and hashing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# Keys read "ak_<key id>_<secret>": the key id is public (safe in logs and URLs), the secret is
# 32 random bytes. Only sha256(whole key) is stored.
PREFIX = "ak_"


def new_key() -> tuple[str, str]:
    """Returns (key_id, full secret key)."""
    key_id = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    secret = secrets.token_urlsafe(32)
    return key_id, f"{PREFIX}{key_id}_{secret}"


def digest(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode()).digest()


def looks_like_key(api_key: str) -> bool:
    return api_key.startswith(PREFIX) and 20 < len(api_key) < 200


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())
