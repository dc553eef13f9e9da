"""normal-synthesis: the anatomy-conditioned (SPADE) healthy-twin generator."""
