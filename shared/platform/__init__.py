"""Platform: settings, errors, the artifact store and model registry, telemetry, image codecs."""
