"""Measurements on real or generated images: per-cell assay features and per-field counts."""
