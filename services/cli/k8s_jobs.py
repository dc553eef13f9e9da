"""The KubeRay `RayJob` that `twinray train MODEL --k8s` submits: a pure function of `TrainJob`.

Its entrypoint is `twinray train MODEL` with the training flags as given; a RayCluster of one head
(the driver only) and `workers` worker pods (one Ray Train worker each, `gpus_per_worker` GPUs) runs
it and is shut down when the job ends. It follows the Helm chart's own training RayJobs
(deploy/helm/twinray/templates/rayjobs.yaml): the release's labels, so the chart's NetworkPolicies let
its pods reach the in-chart MinIO and each other; the same security contexts and resources; the
artifact store settings only by reference to the release's store Secret, never a credential value.
"""

from __future__ import annotations

import dataclasses
import shlex
from importlib.metadata import PackageNotFoundError, version

RELEASE = "twinray"  # the Helm release the job joins
MAX_NAME = 47  # KubeRay derives RayCluster and pod names from a RayJob's name and rejects longer ones
HEAD = {"cpu": "1", "memory": "4Gi"}  # the chart's training.defaults.headResources
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 100,
    "fsGroup": 100,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def package_version(name: str, fallback: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return fallback


def fullname(release: str) -> str:
    """The chart's resource-name prefix (its `twinray.fullname`): the release, with "-twinray" unless it has it."""
    return (release if "twinray" in release else f"{release}-twinray")[:40].rstrip("-")


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """Everything a training RayJob depends on."""

    name: str
    model: str
    train_args: tuple[str, ...]  # the flags after `twinray train MODEL`
    image: str
    workers: int = 1
    gpus_per_worker: int = 0
    cpus_per_worker: str = "2"
    memory_per_worker: str = "8Gi"
    release: str = RELEASE
    store_secret: str = ""  # default: the release's, <fullname>-store
    ray_version: str = dataclasses.field(default_factory=lambda: package_version("ray", "2.60.0"))

    @property
    def entrypoint(self) -> str:
        return shlex.join(["twinray", "train", self.model, *self.train_args])

    @property
    def labels(self) -> dict[str, str]:
        """The chart's selector labels (its NetworkPolicies select on them) and what this job is."""
        return {
            "app.kubernetes.io/name": "twinray",
            "app.kubernetes.io/instance": self.release,
            "app.kubernetes.io/component": "training",
            "twinray.io/model": self.model,
        }


def store_env(secret: str) -> list[dict]:
    """TWINRAY_STORE_* from the Secret by reference. Endpoint and credentials are required: a pod
    without them would train into its own disk and lose the model with the cluster."""
    env = [{"name": "TWINRAY_HOME", "value": "/home/ray/.twinray"}]
    for key, required in (
        ("ENDPOINT", True),
        ("ACCESS_KEY", True),
        ("SECRET_KEY", True),
        ("BUCKET", False),
        ("SECURE", False),
        ("REGION", False),
    ):
        ref = {"name": secret, "key": f"TWINRAY_STORE_{key}", **({} if required else {"optional": True})}
        env.append({"name": f"TWINRAY_STORE_{key}", "valueFrom": {"secretKeyRef": ref}})
    return env


def _pod(job: TrainJob, container: dict, **spec: object) -> dict:
    container = {"image": job.image, **container, "securityContext": CONTAINER_SECURITY}
    return {"metadata": {"labels": job.labels}, "spec": {**spec, "securityContext": POD_SECURITY, "containers": [container]}}


def rayjob_manifest(job: TrainJob, namespace: str) -> dict:
    """The RayJob (ray.io/v1) that runs `job.entrypoint` on its own RayCluster."""
    env = store_env(job.store_secret or f"{fullname(job.release)}-store")
    worker = {"cpu": job.cpus_per_worker, "memory": job.memory_per_worker}
    gpus = {"nvidia.com/gpu": job.gpus_per_worker} if job.gpus_per_worker else {}
    submitter = {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            "name": job.name,
            "namespace": namespace,
            "labels": {**job.labels, "app.kubernetes.io/managed-by": "twinray-cli"},
        },
        "spec": {
            "entrypoint": job.entrypoint,
            "shutdownAfterJobFinishes": True,  # checkpoints and the model are in the artifact store
            "ttlSecondsAfterFinished": 300,
            "submissionMode": "K8sJobMode",
            # KubeRay fills in the submitter's `ray job submit`; the labels let it reach the head's dashboard.
            "submitterPodTemplate": _pod(job, {"name": "ray-job-submitter", "resources": submitter}, restartPolicy="Never"),
            "rayClusterSpec": {
                "rayVersion": job.ray_version,
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0"},  # the driver only: no Ray Train worker lands on the head
                    "template": _pod(job, {"name": "ray-head", "env": env, "resources": {"requests": HEAD, "limits": HEAD}}),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "train",
                        "replicas": job.workers,
                        "minReplicas": job.workers,
                        "maxReplicas": job.workers,
                        "rayStartParams": {},
                        "template": _pod(
                            job,
                            {"name": "ray-worker", "env": env, "resources": {"requests": worker, "limits": {**worker, **gpus}}},
                        ),
                    }
                ],
            },
        },
    }
