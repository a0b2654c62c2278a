"""Kopf only: watch events -> cache + work queue -> reconcile; the webhook; progress and metrics servers.

`kopf run -m maestro.controllers` (or `maestro run`) loads this package, which registers every handler.
"""

from maestro.controllers import handlers, webhook

__all__ = ["handlers", "webhook"]
