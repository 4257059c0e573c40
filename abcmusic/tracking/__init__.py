"""Experiment tracking: MLflow runs for trials and sweep summaries."""
