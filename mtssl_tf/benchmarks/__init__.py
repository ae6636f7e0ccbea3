"""Measurement code behind tools/benchmark.py (timing, steps, TF-Slim trunk)."""
