"""workers/guard."""
