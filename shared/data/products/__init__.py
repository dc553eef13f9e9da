"""Product surfaces and real-like defects with exact masks, for defect generation and detection.

Factories have many good parts and few labelled defects. This package renders seeded normal
surfaces (`surfaces`), puts physics-inspired defects with exact masks on them (`defects`; these play
the scarce REAL defects and share nothing with the synthesis methods), stores them as datasets
(`dataset`) and reads real data in the MVTec AD layout (`mvtec`).

Store I/O lives in `twinray.shared.data.products.dataset` and the MVTec loader in `twinray.shared.data.products.mvtec`; this
package root stays light (numpy and scipy only).
"""

from twinray.shared.data.products.defects import DEFECT_KINDS, MIN_CHANGE, render_defect
from twinray.shared.data.products.surfaces import CATEGORIES, render_surface

__all__ = ["CATEGORIES", "DEFECT_KINDS", "MIN_CHANGE", "render_defect", "render_surface"]
