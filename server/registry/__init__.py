"""The consortium model registry on MLflow: tracking of runs, model cards, signed versions."""
