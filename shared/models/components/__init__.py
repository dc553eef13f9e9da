"""Pieces several models share: config round-trip, residual head, GAN losses, diffusion."""
