"""workers/train."""
