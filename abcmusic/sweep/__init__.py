"""Sweeps: experiment specs, the trial grid, the Ray Tune driver and the Ray Train trial."""
