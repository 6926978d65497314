"""Phenexplain: make invisible cell phenotypes visible with a conditional StyleGAN2.

The core package uses the scientific stack only (torch, numpy, scipy, pandas, scikit-image,
scikit-learn, statsmodels, pillow, tifffile, pydantic, typer, ...; pyproject.toml lists them).
Orchestration, tracking and storage (prefect, mlflow, dvc, great_expectations, boto3) are imported
solely by `phenexplain.integrations` and `flows/` (tests/test_imports.py checks it), so
`import phenexplain` stays light.
"""

from phenexplain.errors import ConfigError, OutputExistsError, PhenexplainError

__version__ = "0.1.0"

__all__ = ["ConfigError", "OutputExistsError", "PhenexplainError", "__version__"]
