"""Submitting a training RayJob and following its status until it succeeds or fails.

KubeRay reports a RayJob's progress in `status.jobDeploymentStatus` (Initializing, Running, Complete,
Failed, ...) and the Ray job's own state in `status.jobStatus` (PENDING, RUNNING, SUCCEEDED, FAILED,
STOPPED). Following reads the object every few seconds and prints a line when either changes; Ctrl-C
stops following, never the job.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Literal

from twinray.services.cli.k8s_jobs import rayjob_manifest
from twinray.services.cli.k8s_train import train_job
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import TwinRayError, Unavailable

if TYPE_CHECKING:
    from twinray.services.cli.k8s_api import Cluster

POLL_S = 5.0
RETRIES = 3  # consecutive failed reads (API restarts, network blips) before giving up
TERMINAL = {"Complete", "Failed", "ValidationFailed"}


class RayJobFailed(TwinRayError):
    """The RayJob ended without its Ray job succeeding."""

    code = "ABORTED"


def outcome(status: dict) -> Literal["running", "succeeded", "failed"]:
    """Where a RayJob's status stands: only a Complete deployment whose job SUCCEEDED is a success."""
    if status.get("jobDeploymentStatus") not in TERMINAL:
        return "running"
    succeeded = status["jobDeploymentStatus"] == "Complete" and status.get("jobStatus") == "SUCCEEDED"
    return "succeeded" if succeeded else "failed"


def progress(status: dict) -> str:
    """One line for a status: the deployment state, the Ray job's state and KubeRay's message."""
    line = status.get("jobDeploymentStatus") or "submitted, waiting for the operator"
    if status.get("jobStatus"):
        line += f", job {status['jobStatus']}"
    return line + (f": {status['message']}" if status.get("message") else "")


def follow_command(name: str, namespace: str) -> str:
    return f"twinray follow {name} --namespace {namespace}"


def follow(cluster: Cluster, name: str, *, poll_s: float = POLL_S) -> None:
    """Print status changes until the RayJob ends; raises RayJobFailed if it failed, exits 130 on Ctrl-C."""
    from twinray.services.cli.k8s_api import api_errors

    where, start, last, failures, dashboard = f"{cluster.namespace}/{name}", time.monotonic(), "", 0, ""
    try:
        while True:
            try:
                with api_errors(f"RayJob {name!r}", cluster):
                    status = cluster.get("rayjobs", name).get("status") or {}
                failures = 0
            except Unavailable as error:
                failures += 1
                if failures > RETRIES:
                    raise
                print(f"twinray: {error} (retrying)", file=sys.stderr, flush=True)
                time.sleep(poll_s)
                continue
            elapsed = f"[{time.monotonic() - start:6.0f}s]"
            if (line := progress(status)) != last:
                print(f"{elapsed} RayJob {where}: {line}", flush=True)
                last = line
            if status.get("dashboardURL") and not dashboard:
                dashboard = status["dashboardURL"]
                print(f"{elapsed} Ray dashboard: {dashboard}", flush=True)
            state = outcome(status)
            if state == "succeeded":
                print(f"{elapsed} RayJob {where} succeeded", flush=True)
                return
            if state == "failed":
                job = status.get("jobStatus") or "never ran"
                raise RayJobFailed(
                    f"RayJob {where} failed ({status['jobDeploymentStatus']}, job {job}); logs: kubectl logs -n {cluster.namespace} job/{name}"
                )
            time.sleep(poll_s)
    except KeyboardInterrupt:
        print(
            f"\nstopped following; RayJob {where} keeps running. Follow it again: {follow_command(name, cluster.namespace)}",
            file=sys.stderr,
        )
        raise SystemExit(130) from None


def submit(args: argparse.Namespace) -> None:
    """`twinray train MODEL --k8s ...`: create the RayJob, then follow it unless --no-follow."""
    from twinray.services.cli.k8s_api import api_errors, connect

    job = train_job(args)  # options checked before anything talks to a cluster
    cluster = connect(args.namespace)
    with api_errors(f"RayJob {job.name!r}", cluster):
        cluster.create("rayjobs", rayjob_manifest(job, cluster.namespace))
    gpus = f" x {job.gpus_per_worker} GPU" if job.gpus_per_worker else ""
    print(f"submitted RayJob {cluster.namespace}/{job.name} ({job.workers} worker(s){gpus}, {job.image}): {job.entrypoint}")
    if args.follow is False:
        print(f"follow it: {follow_command(job.name, cluster.namespace)}")
        return
    follow(cluster, job.name, poll_s=args.poll_seconds or POLL_S)


def _follow(args: argparse.Namespace, settings: Settings) -> None:
    from twinray.services.cli.k8s_api import connect

    follow(connect(args.namespace), args.rayjob, poll_s=args.poll_seconds)


def add_follow_parser(sub: argparse._SubParsersAction) -> None:
    """`twinray follow RAYJOB`: follow a RayJob submitted earlier (after --no-follow or Ctrl-C)."""
    parser = sub.add_parser("follow", help="follow a training RayJob until it succeeds or fails")
    parser.add_argument("rayjob", help="its name, as `twinray train --k8s` printed it")
    parser.add_argument("--namespace", help="default: the kubeconfig context's (in a pod: its own)")
    parser.add_argument("--poll-seconds", type=float, default=POLL_S, help="seconds between status reads")
    parser.set_defaults(func=_follow)
