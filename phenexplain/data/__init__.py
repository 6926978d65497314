"""Plate data: synthetic assays, readers, nuclei, crops and quality control."""
