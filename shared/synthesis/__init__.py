"""Synthesis: drawing defects with exact masks (mask sampling, blending, conditioned inpainting)."""
