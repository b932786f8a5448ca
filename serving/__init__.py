"""Triton model repository, runtime and client (not yet implemented)."""
