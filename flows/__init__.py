"""Prefect flows of the Phenexplain service (see pipeline.py and prefect.yaml)."""
