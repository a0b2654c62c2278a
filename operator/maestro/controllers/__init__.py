"""Kopf only: watch events -> cache + work queue -> reconcile; the webhook; progress and metrics servers.

`kopf run -m maestro.controllers` (or `maestro run`) loads this package, which registers every handler.
The admission handlers are registered only when the webhook is on (MAESTRO_WEBHOOK, default on): Kopf
refuses to start with admission handlers and no server to serve them.
"""

from maestro.controllers import handlers
from maestro.controllers.config import OperatorConfig

if OperatorConfig.from_env().webhook:
    from maestro.controllers import webhook  # noqa: F401  (registers the @kopf.on.validate handlers)

__all__ = ["handlers"]
