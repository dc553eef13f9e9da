"""Evaluation protocols and metrics: one report shape for every model (apart from training)."""
