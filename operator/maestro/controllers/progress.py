"""The training progress endpoint: `POST /v1/progress/{namespace}/{name}` with a projected token.

Training pods carry no API credentials. They present a service-account token with audience
`maestro-progress` (useless against the API server); the operator verifies it with a TokenReview,
checks that the token's pod belongs to that LLMTrainingJob, and only then patches status.progress.
This is Kubeflow Trainer's status-server design.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from maestro.controllers import metrics
from maestro.k8s import ApiError, Kube
from maestro.reconcile import progress

log = logging.getLogger("maestro.progress")
MAX_BODY = 16 * 1024


def progress_app(kube: Kube, audience: str) -> web.Application:
    async def post(request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return _error(401, "send the projected token as Authorization: Bearer <token>")
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return _error(413, f"progress reports are limited to {MAX_BODY} bytes")
        try:
            report: Any = json.loads(body)
            if not isinstance(report, dict):
                raise ValueError("not an object")
            review = await kube.token_review(auth.removeprefix("Bearer ").strip(), [audience])
            await progress.authorize(kube, review, ns, name)
            patch = await progress.apply(kube, ns, name, report)
        except progress.Rejected as exc:
            return _error(exc.code, str(exc))
        except ValueError as exc:
            return _error(400, f"body must be a JSON object: {exc}")
        except ApiError as exc:
            log.warning("Progress report for %s/%s failed: %s", ns, name, exc)
            return _error(503, "the operator could not record the report; it will accept the next one")
        metrics.observe_status(
            {
                "kind": "LLMTrainingJob",
                "metadata": {"namespace": ns, "name": name},
                "status": {"progress": patch},
            }
        )
        return web.json_response({"accepted": patch})

    app = web.Application(client_max_size=MAX_BODY)
    app.add_routes([web.post("/v1/progress/{namespace}/{name}", post)])
    return app


def _error(code: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=code)
