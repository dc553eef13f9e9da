"""Data: the anatomy label set, CXR phantoms, product surfaces, dataset I/O and pseudo-pairs."""
