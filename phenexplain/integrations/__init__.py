"""Adapters to external services and frameworks: the only modules that import great_expectations,
mlflow or boto3. Nothing in the core imports this package."""
