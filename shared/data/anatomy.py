"""The anatomy label set: the one place where class indices of every anatomy map are defined.

Phantoms, the segmenter, the anatomy-conditioned generator and the services all share these
indices, so a label map written by one can be read by any other.

Side convention (radiological): "right" is the PATIENT's right, which a PA chest radiograph shows
on the IMAGE's LEFT. So `lung_right` lies in the left half of the image.

Index  Name               What it covers
0      background         air outside the body and soft tissue not listed below (chest wall, neck,
                          shoulders, arms); ribs are visible but not labelled
1      lung_right         the patient's right lung field (image left), where it is not hidden by a
                          higher-priority structure
2      lung_left          the patient's left lung field (image right)
3      heart              the cardiac silhouette down to the diaphragm
4      clavicle_right     the patient's right clavicle (image left)
5      clavicle_left      the patient's left clavicle (image right)
6      mediastinum_spine  the central column: spine, trachea, great vessels, aortic knob
7      diaphragm          the sub-diaphragmatic region below the domes, inside the body (abdomen)

Where structures overlap in projection, one label wins, in this priority order:
clavicle > heart > mediastinum_spine > lungs > diaphragm > background.
"""

from __future__ import annotations

ANATOMY_CLASSES: tuple[str, ...] = (
    "background",
    "lung_right",
    "lung_left",
    "heart",
    "clavicle_right",
    "clavicle_left",
    "mediastinum_spine",
    "diaphragm",
)
NUM_ANATOMY_CLASSES: int = len(ANATOMY_CLASSES)

BACKGROUND, LUNG_RIGHT, LUNG_LEFT, HEART, CLAVICLE_RIGHT, CLAVICLE_LEFT, MEDIASTINUM_SPINE, DIAPHRAGM = range(NUM_ANATOMY_CLASSES)
LUNGS: tuple[int, int] = (LUNG_RIGHT, LUNG_LEFT)


def class_name(index: int) -> str:
    """The name of anatomy class `index` (IndexError outside 0..NUM_ANATOMY_CLASSES-1)."""
    if not 0 <= index < NUM_ANATOMY_CLASSES:
        raise IndexError(f"anatomy class index {index} is outside 0..{NUM_ANATOMY_CLASSES - 1}")
    return ANATOMY_CLASSES[index]
