"""DefectGeneration: synthetic product defects with exact masks (approaches A and B), one at a time or
as whole datasets written to the artifact store."""
