"""Maestro: a Kubernetes operator for LLMOps (datasets, fine-tuning, guarded serving)."""

__version__ = "0.1.0"
