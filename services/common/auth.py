"""The bearer token every external RPC carries when `TWINRAY_AUTH_TOKEN` is set.

Checked once, at the gRPC ingress (twinray.services.common.proxy), before Ray Serve routes the call:
calls between deployments travel through Serve handles and never pass the ingress, so they need no
token. The comparison takes the same time whatever the token sent, and no message names it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

AUTHORIZATION = "authorization"
SCHEME = "bearer"


def authorization_metadata(token: str) -> tuple[str, str]:
    """The metadata a client sends."""
    return (AUTHORIZATION, f"Bearer {token}")


def token_refusal(metadata: Iterable[tuple[str, str | bytes]], expected: str) -> str:
    """Why `metadata` lacks `authorization: Bearer <expected>` (one line, never the token); empty if it has it."""
    values = [value for key, value in metadata if key.lower() == AUTHORIZATION]
    if not values:
        return "missing metadata 'authorization: Bearer <token>'"
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    scheme, _, sent = value.strip().partition(" ")
    if scheme.lower() != SCHEME or not sent.strip():
        return "the 'authorization' metadata must be 'Bearer <token>'"
    # Digests first: equal lengths, so the comparison's time does not even depend on the token's length.
    if not hmac.compare_digest(_digest(sent.strip()), _digest(expected)):
        return "the bearer token is not valid"
    return ""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
