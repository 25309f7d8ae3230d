"""Spry Python SDK (placeholder)."""
