"""Deployment-to-deployment calls with the public protobuf contract.

When one deployment calls another through a Ray Serve handle there is no gRPC context; an
`InternalCall` stands in for it: it carries the caller's trace metadata, and the callee's errors
travel back as exceptions (twinray.services.common.errors re-raises them) instead of a status code.
"""

from __future__ import annotations

import dataclasses

from twinray.shared.platform.telemetry import metadata_for_current_span


@dataclasses.dataclass(frozen=True)
class InternalCall:
    metadata: tuple[tuple[str, str], ...]

    @classmethod
    def from_current_span(cls) -> InternalCall:
        return cls(tuple(metadata_for_current_span()))

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return list(self.metadata)


def remote_cause(error: BaseException) -> BaseException:
    """The callee's own exception inside Ray's RayTaskError wrapper (whose text is a traceback)."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error
