"""One level-based reconcile per kind: read -> build -> apply -> derive status.

Nothing here imports Kopf: the controllers adapt Kopf's events to these functions, and the tests
call them directly.
"""
