"""defect-encoder: the conditioning encoder that steers the normal-manifold DDPM."""
