"""Phenexplain: make invisible cell phenotypes visible with a conditional StyleGAN2.

The core package depends on numpy, scipy, scikit-image, pillow, tifffile and (for the models) torch
only. Orchestration and tracking (prefect, mlflow, great_expectations, boto3) are imported solely by
`phenexplain.integrations` and `flows/`, so `import phenexplain` stays light.
"""

from phenexplain.errors import ConfigError, OutputExistsError, PhenexplainError

__version__ = "0.1.0"

__all__ = ["ConfigError", "OutputExistsError", "PhenexplainError", "__version__"]
