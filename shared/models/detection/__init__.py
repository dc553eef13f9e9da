"""detection: the lesion detector (RetinaNet) and the variants of the residual ablation."""
