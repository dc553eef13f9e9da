"""`twinray scale APP N`: set the replicas of a Serve application in the live RayService.

The applications live in the RayService's `spec.serveConfigV2`, a YAML string (the Serve config
`twinray up` deploys). Scaling reads it from the live object, changes `num_replicas` of APP's
deployments only, and sends it back as a JSON merge patch carrying the resourceVersion read, so a
concurrent change (a `helm upgrade`) makes the API answer 409 instead of being overwritten.
KubeRay then updates the running Serve applications in place.
"""

from __future__ import annotations

import argparse
import dataclasses

import yaml

from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import FailedPrecondition, InvalidInput, NotFound

RAYSERVICE = "twinray"


@dataclasses.dataclass(frozen=True)
class Change:
    deployment: str
    before: str  # "1", or "autoscaling 1..4"
    after: int


def _replicas(deployment: dict) -> str:
    auto = deployment.get("autoscaling_config")
    if auto is not None or deployment.get("num_replicas") == "auto":
        auto = auto or {}
        return f"autoscaling {auto.get('min_replicas', '?')}..{auto.get('max_replicas', '?')}"
    return str(deployment.get("num_replicas", 1))  # Serve's default


def scale_serve_config(
    serve_config: str, app: str, replicas: int, *, replace_autoscaling: bool = False
) -> tuple[str, list[Change]]:
    """The Serve config with APP's deployments at `replicas`, and what changed; other applications untouched.

    An autoscaled deployment is refused unless `replace_autoscaling`: then its autoscaling_config is
    dropped for a fixed count (Serve accepts one or the other, never both).
    """
    if replicas < 1:
        raise InvalidInput(f"replicas must be 1 or more (Ray Serve's num_replicas is a positive integer), got {replicas}")
    try:
        config = yaml.safe_load(serve_config) or {}
    except yaml.YAMLError as error:
        raise FailedPrecondition(f"spec.serveConfigV2 is not valid YAML: {error}") from None
    applications = {entry.get("name"): entry for entry in config.get("applications") or []}
    if app not in applications:
        known = ", ".join(str(name) for name in applications) or "none"
        raise NotFound(f"no Serve application {app!r}; the RayService has: {known}")
    deployments = applications[app].get("deployments") or []
    if not deployments:
        raise FailedPrecondition(
            f"application {app!r} names no deployments in spec.serveConfigV2: nothing to set num_replicas on"
        )
    autoscaled = [f"{app}/{d['name']} ({_replicas(d)})" for d in deployments if _replicas(d).startswith("autoscaling")]
    if autoscaled and not replace_autoscaling:
        raise FailedPrecondition(
            f"{', '.join(autoscaled)} is autoscaled: change serve.applications.{app}.autoscaling in the Helm values, "
            f"or pass --replace-autoscaling to pin it at {replicas} replica(s)"
        )
    changes = []
    for deployment in deployments:
        before = _replicas(deployment)
        if before != str(replicas):
            deployment.pop("autoscaling_config", None)
            deployment["num_replicas"] = replicas
            changes.append(Change(deployment["name"], before, replicas))
    return yaml.safe_dump(config, sort_keys=False), changes


def scale(args: argparse.Namespace, settings: Settings) -> None:
    """Read the live RayService, change APP's replicas, merge-patch spec.serveConfigV2, print what changed."""
    from twinray.services.cli.k8s_api import api_errors, connect

    cluster = connect(args.namespace)
    what = f"RayService {args.rayservice!r}"
    with api_errors(what, cluster):
        live = cluster.get("rayservices", args.rayservice)
    serve_config = (live.get("spec") or {}).get("serveConfigV2")
    if not serve_config:
        raise FailedPrecondition(f"{what} has no spec.serveConfigV2: it serves no Serve applications to scale")
    updated, changes = scale_serve_config(serve_config, args.app, args.replicas, replace_autoscaling=args.replace_autoscaling)
    where = f"RayService {cluster.namespace}/{args.rayservice}"
    if not changes:
        print(f"{where}: {args.app} already runs {args.replicas} replica(s); nothing patched")
        return
    patch: dict = {"spec": {"serveConfigV2": updated}}
    if version := (live.get("metadata") or {}).get("resourceVersion"):
        patch["metadata"] = {"resourceVersion": version}  # 409 if it changed since we read it
    with api_errors(what, cluster):
        cluster.merge_patch("rayservices", args.rayservice, patch)
    for change in changes:
        print(f"{where}: {args.app}/{change.deployment} num_replicas {change.before} -> {change.after}")
    print(
        "KubeRay updates the running application in place; a later `helm upgrade` resets it "
        f"unless the chart's values say serve.applications.{args.app}.replicas: {args.replicas}"
    )


def add_scale_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("scale", help="set the replicas of a Serve application in the cluster's RayService")
    parser.add_argument("app", help="Serve application, as in services/serve_config.yaml (e.g. segmentation)")
    parser.add_argument("replicas", type=int, help="num_replicas for each of its deployments (1 or more)")
    parser.add_argument("--namespace", help="default: the kubeconfig context's (in a pod: its own)")
    parser.add_argument(
        "--rayservice",
        default=RAYSERVICE,
        help=f"the RayService: the Helm chart names it <release>-twinray, or <release> if that has 'twinray' in it (default {RAYSERVICE})",
    )
    parser.add_argument(
        "--replace-autoscaling",
        action="store_true",
        help="pin an autoscaled deployment at N replicas (drops its autoscaling_config)",
    )
    parser.set_defaults(func=scale)
