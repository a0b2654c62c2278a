"""workers/data."""
