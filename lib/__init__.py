"""The library: the inference engine (engine/), evaluation (evaluation/) and tools (tools/: checkpoints, FLOPs,
CLI helpers)."""
