"""Stages, checkpoints, callbacks and the run loop."""
