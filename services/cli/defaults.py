"""The datasets the CLI and the demo make unless told otherwise (names and split sizes)."""

DATASET = "cxr-phantoms"
SPLITS = {"train": 320, "val": 32, "test": 64}
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
