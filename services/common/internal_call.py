"""Deployment-to-deployment calls with the public protobuf contract.

When one deployment calls another through a Ray Serve handle there is no gRPC context; an
`InternalCall` stands in for it: it carries the caller's trace metadata, and the callee's errors
travel back as exceptions (twinray.services.common.errors re-raises them) instead of a status code.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twinray.shared.platform.errors import TwinRayError, Unavailable
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


async def call_app(deployment: str, method: str, app: str, request: Any) -> Any:
    """`deployment.method(request)` of Serve application `app` through a deployment handle. Its own
    verdicts (bad image, unknown version, ...) come back as they are; a missing app or dead replica
    is UNAVAILABLE."""
    from ray import serve  # only deployments call other deployments: the servicers stay Ray-free

    try:
        handle = serve.get_deployment_handle(deployment, app_name=app)
        return await getattr(handle, method).remote(request, InternalCall.from_current_span())
    except TwinRayError as error:
        raise remote_cause(error) from None
    except Exception as error:  # noqa: BLE001 - app missing, replica dead, ...
        raise Unavailable(f"{deployment} service {app!r} is unavailable: {type(error).__name__}") from None
