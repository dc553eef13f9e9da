"""DefectGeneration: synthetic product defects with exact masks (mask_blend and conditioned_ddpm), one at a time or
as whole datasets written to the artifact store."""
