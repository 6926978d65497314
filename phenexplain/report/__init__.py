"""The validation report and the interactive explorer page."""
