"""Losses, the training loop, the target-model cache and distributed helpers."""
