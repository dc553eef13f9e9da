"""The datasets the CLI and the demo make unless told otherwise (names and split sizes)."""

DATASET = "cxr-phantoms-v2"
PHANTOM_GENERATOR = "cxr-phantom/2"  # four pathologies, confounders, calibrated on real annotation tables
SPLITS = {"train": 320, "val": 64, "test": 128}
PRODUCTS = "products"
# Thousands of normal parts, a handful of labelled defects; val splits to choose checkpoints and
# settings on; many held-out defects to measure on.
PRODUCT_SPLITS = {
    "train_normal": 200,
    "train_defect": 20,
    "val_normal": 50,
    "val_defect": 50,
    "test_normal": 50,
    "test_defect": 100,
}
