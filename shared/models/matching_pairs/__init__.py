"""matching-pairs: the CycleGAN translator between abnormal and normal CXRs."""
