"""segmentation: the anatomy segmenter."""
