"""Pieces every TwinRay gRPC service shares: error mapping, image input, model loading, telemetry."""
