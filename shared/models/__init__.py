"""Plain torch modules, used unchanged by training (Ray Train) and serving (Ray Serve)."""
