"""The inference engine: per-video sessions, object state, reuse policies and the paths they choose."""
