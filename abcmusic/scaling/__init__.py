"""Scaling-law fits of final validation loss against model size, and their plot."""
