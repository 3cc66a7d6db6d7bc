"""Evaluation runs, DAVIS metrics, summaries and the trade-off report."""
