"""Inference engine, metrics, FLOP accounting, checkpoints and file I/O."""
