"""Checkpoints, FLOP accounting and command-line helpers."""
