"""The review console: a human review queue for what the guard and monitor flag, RBAC-checked.

A worker of its own (`python -m maestro.workers.console`, `maestro console`): it imports no other
worker and no control-plane module. See docs/console.md.
"""
