"""Kopf only: watch events -> cache + work queue -> reconcile; the webhook; progress and metrics servers.

`kopf run -m maestro.controllers` (or `maestro run`) loads this package, which registers every handler
on Kopf's default registry. The admission handlers are registered only when the webhook is on
(MAESTRO_WEBHOOK, default on): Kopf refuses to start with admission handlers and no server to serve them.
"""

import kopf

from maestro.controllers import handlers, login
from maestro.controllers.config import OperatorConfig

handlers.register(kopf.get_default_registry())
login.register(kopf.get_default_registry())
if OperatorConfig.from_env().webhook:
    from maestro.controllers import webhook

    webhook.register(kopf.get_default_registry())

__all__ = ["handlers", "login"]
