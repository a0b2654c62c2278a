"""workers/monitor."""
