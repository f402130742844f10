"""Benchmark scripts and their shared code (not part of the installed package)."""
