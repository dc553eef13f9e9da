"""Published model versions in the artifact store, so training and serving agree on exact bytes.

Layout: `models/<name>/<version>/{weights.pt, config.json, metrics.json, training.json, card.md, ...}`
and `models/<name>/<version>/manifest.json`, written LAST and listing every file with its sha256 and
size. A version exists only once its manifest does, so a crashed publish is invisible, and `load`
checks every byte it returns against the manifest.

Concurrency: version numbers come from listing (1 + the highest number with any object, so an
unfinished publish also holds its number). Two publishers of the same name at the same moment may
pick the same number. Each writes a claim object with a random token first and re-reads it just before
writing the manifest; the loser raises Unavailable ("publish again"). S3 offers no compare-and-swap
through this interface, so a window remains between that re-check and the manifest write: a collision
inside it can leave a manifest that does not describe the files beside it (and both publishers told
they own the version); `load` then raises IntegrityError instead of serving mixed weights. One
publisher per model name at a time (its training job) is the intended use.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import subprocess
import uuid

from twinray.shared.platform.errors import IntegrityError, InvalidInput, NotFound, Unavailable
from twinray.shared.platform.storage.base import ArtifactRef, ArtifactStore

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
VERSION_PATTERN = re.compile(r"^[1-9][0-9]*$")
FILE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MANIFEST = "manifest.json"
CLAIM = ".claim"
STANDARD_FILES = ("weights.pt", "config.json", "metrics.json", "training.json", "card.md")


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """What `publish` wrote."""

    name: str
    version: int
    manifest_ref: ArtifactRef
    manifest: dict


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A verified model version: the caller turns `weights` into a module (torch.load of BytesIO)."""

    name: str
    version: int
    manifest: dict
    config: dict
    metrics: dict
    weights: bytes


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidInput(f"invalid model name {name!r}: use 1-63 of a-z, 0-9 and '-', not starting with '-'")
    return name


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _json(value: object, what: str) -> bytes:
    try:
        return json.dumps(value, indent=2, sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must be JSON-serialisable: {exc}") from None


class ModelRegistry:
    """Versions 1, 2, 3... per model name, on any ArtifactStore."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    @staticmethod
    def _prefix(name: str, version: int | None = None) -> str:
        return f"models/{name}/" if version is None else f"models/{name}/{version}/"

    def _numbers(self, name: str, *, complete: bool) -> list[int]:
        """Version numbers with a manifest (complete) or with any object at all."""
        prefix = self._prefix(check_name(name))
        found = set()
        for key in self.store.list(prefix):
            number, _, rest = key[len(prefix) :].partition("/")
            if VERSION_PATTERN.match(number) and (rest == MANIFEST or not complete):
                found.add(int(number))
        return sorted(found)

    def versions(self, name: str) -> list[int]:
        return self._numbers(name, complete=True)

    def latest(self, name: str) -> int:
        versions = self.versions(name)
        if not versions:
            raise NotFound(f"no published version of model '{name}'; train it with `twinray train {name}`")
        return versions[-1]

    def latest_trained_on(self, name: str, dataset: str) -> int | None:
        """The latest version of `name` whose training.json names `dataset`, or None: a model trained on
        other data (an earlier release's phantoms, say) is never picked up for this one."""
        for version in reversed(self.versions(name)):
            if json.loads(self.read_file(name, version, "training.json")).get("dataset") == dataset:
                return version
        return None

    def resolve(self, name: str, version: str | int | None) -> int:
        """None, "" or "latest" -> the latest version; otherwise that published version (NotFound if absent)."""
        if version is None or (isinstance(version, str) and version.strip().lower() in ("", "latest")):
            return self.latest(name)
        try:
            number = int(version)
        except (TypeError, ValueError):
            raise InvalidInput(f"invalid version {version!r} of model '{name}': use an integer or 'latest'") from None
        versions = self.versions(name)
        if number not in versions:
            published = ", ".join(map(str, versions)) or "none"
            raise NotFound(f"model '{name}' has no version {number} (published: {published})")
        return number

    def publish(
        self,
        name: str,
        *,
        weights: bytes,
        config: dict,
        metrics: dict,
        training: dict,
        card: str,
        source_commit: str | None = None,
        extra_files: dict[str, bytes] | None = None,
    ) -> ModelVersion:
        """Write a new version's files, then its manifest; return it once visible."""
        check_name(name)
        files = {
            "weights.pt": bytes(weights),
            "config.json": _json(config, "config"),
            "metrics.json": _json(metrics, "metrics"),
            "training.json": _json(training, "training"),
            "card.md": card.encode(),
        }
        for filename, data in (extra_files or {}).items():
            if not FILE_PATTERN.match(filename) or filename in files or filename in (MANIFEST, CLAIM):
                raise InvalidInput(f"invalid or reserved extra file name {filename!r} for model '{name}'")
            files[filename] = bytes(data)

        taken = self._numbers(name, complete=False)
        version = taken[-1] + 1 if taken else 1
        prefix = self._prefix(name, version)
        token = uuid.uuid4().hex
        self.store.put_bytes(prefix + CLAIM, token.encode())
        listed = {}
        for filename, data in files.items():
            ref = self.store.put_bytes(prefix + filename, data)
            listed[filename] = {"sha256": ref.sha256, "size": ref.size}
        if self.store.get_bytes(prefix + CLAIM) != token.encode():
            raise Unavailable(f"version {version} of model '{name}' was claimed by another publisher; publish again")
        manifest = {
            "name": name,
            "version": version,
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "source_commit": source_commit or _git_commit(),
            "weights_sha256": listed["weights.pt"]["sha256"],
            "files": listed,
        }
        ref = self.store.put_bytes(prefix + MANIFEST, _json(manifest, "manifest"), content_type="application/json")
        return ModelVersion(name, version, ref, manifest)

    def manifest(self, name: str, version: str | int | None = None) -> dict:
        """The manifest of a published version (checked to describe that version)."""
        number = self.resolve(name, version)
        key = self._prefix(name, number) + MANIFEST
        try:
            manifest = json.loads(self.store.get_bytes(key))
            described = (manifest["name"], manifest["version"]) == (name, number)
            consistent = described and isinstance(manifest["files"], dict)
        except (ValueError, KeyError, TypeError):
            consistent = False
        if not consistent:
            raise IntegrityError(f"{self.store.uri(key)} is not a valid manifest for model '{name}' version {number}")
        return manifest

    def read_file(self, name: str, version: str | int | None, filename: str) -> bytes:
        """One file of a published version, verified against its manifest (e.g. card.md or an extra file)."""
        manifest = self.manifest(name, version)
        return self._read(manifest, filename)

    def _read(self, manifest: dict, filename: str) -> bytes:
        name, version = manifest["name"], manifest["version"]
        entry = manifest["files"].get(filename)
        if entry is None:
            raise NotFound(f"model '{name}' version {version} has no file {filename!r}")
        try:
            data = self.store.get_bytes(self._prefix(name, version) + filename, sha256=entry["sha256"])
        except NotFound:
            raise IntegrityError(f"model '{name}' version {version} lost its file {filename!r}") from None
        if len(data) != entry["size"]:
            raise IntegrityError(f"model '{name}' version {version} file {filename!r} has the wrong size")
        return data

    def load(self, name: str, version: str | int | None = None) -> LoadedModel:
        """Weights, config and metrics of a version, each verified against the manifest (IntegrityError)."""
        manifest = self.manifest(name, version)
        if manifest.get("weights_sha256") != manifest["files"].get("weights.pt", {}).get("sha256"):
            raise IntegrityError(f"manifest of model '{name}' version {manifest['version']} has two weights sha256")
        return LoadedModel(
            name=name,
            version=manifest["version"],
            manifest=manifest,
            config=json.loads(self._read(manifest, "config.json")),
            metrics=json.loads(self._read(manifest, "metrics.json")),
            weights=self._read(manifest, "weights.pt"),
        )
