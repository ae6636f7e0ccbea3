"""Pretext tasks: one module per task, all registered in tasks/registry.py."""
