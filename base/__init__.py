"""The bottom layer, importable by every other package: error types and file I/O helpers."""
