"""Benchmarks of the G-FRTM implementation (``python -m benchmarks.speed``)."""
