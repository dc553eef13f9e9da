"""Pieces every TwinRay gRPC service shares: error mapping, image input, model loading, common
messages, deployment-to-deployment calls and client helpers."""
