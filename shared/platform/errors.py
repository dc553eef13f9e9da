"""Errors that carry the gRPC status a client should see, without depending on gRPC.

Code in `shared/` raises these; services map `.code` onto `grpc.StatusCode` and send `str(error)`
(one line a person can act on) as the status details.
"""

from __future__ import annotations


class TwinRayError(Exception):
    """Base class; `code` names a gRPC status code."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line


class InvalidInput(TwinRayError):
    """The caller sent something unusable (bad image, bad tensor, bad option)."""

    code = "INVALID_ARGUMENT"


class NotFound(TwinRayError):
    """A named model version, dataset or artifact does not exist."""

    code = "NOT_FOUND"


class ResourceExhausted(TwinRayError):
    """A request exceeds a configured limit (size, count)."""

    code = "RESOURCE_EXHAUSTED"


class Unavailable(TwinRayError):
    """A dependency (artifact store, another service) cannot be reached; retrying may help."""

    code = "UNAVAILABLE"


class PermissionDenied(TwinRayError):
    """A dependency refused our credentials (e.g. a wrong artifact-store secret key); retrying will not help."""

    code = "PERMISSION_DENIED"


class IntegrityError(TwinRayError):
    """Stored bytes do not match their recorded sha256."""

    code = "DATA_LOSS"


class FailedPrecondition(TwinRayError):
    """The request is fine but the server's state cannot serve it (e.g. `mask_blend`'s real defects are gone)."""

    code = "FAILED_PRECONDITION"
