"""Synthetic data with ground truth real data cannot give: CXR phantoms and their healthy twins.

Store I/O (writing and reading phantom datasets) lives in `twinray.shared.data.phantoms.dataset`, which imports
torch; this package root stays light.
"""

from twinray.shared.data.phantoms.cxr import FIELD_OF_VIEW_MM, GENERATOR_VERSION, MAX_LESIONS, Phantom, render_phantom

__all__ = ["FIELD_OF_VIEW_MM", "GENERATOR_VERSION", "MAX_LESIONS", "Phantom", "render_phantom"]
