"""Conditions and status derivation: pure functions from observed child state to status fields."""
