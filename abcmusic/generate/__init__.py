"""Sampling tunes from a trained model."""
