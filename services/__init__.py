"""TwinRay's gRPC services (one folder each) and the `twinray` CLI application (services/cli/)."""

from pathlib import Path

SERVE_CONFIG = Path(__file__).with_name("serve_config.yaml")  # what `twinray up` deploys
