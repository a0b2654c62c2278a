"""Feedback carries the traffic-split variant of the request it is about (from the guard's event)."""

from __future__ import annotations

import json
import os

import pytest
from monitor_helpers import event

from maestro.workers.events import EventEmitter
from maestro.workers.monitor import contract as c

pytestmark = pytest.mark.unit


async def test_feedback_names_the_variant_that_served_the_request(start_monitor, sock_dir) -> None:
    fdir = os.path.join(sock_dir, "feedback")
    mon = await start_monitor(vllm_metrics_url="http://127.0.0.1:9/metrics", feedback_dir=fdir)
    emitter = EventEmitter(mon.monitor.settings.events_socket)
    emitter.emit(event(requestId="routed", variant="tuned", promptDigest="sha256:" + "a" * 64))
    emitter.emit(event(requestId="plain"))
    emitter.emit(event(requestId="odd", variant=["not", "a", "name"]))  # events are data, not trusted
    emitter.close()
    await mon.settle(3)

    status, body = await mon.post_feedback({"requestId": "routed", "thumbs": "up"})
    assert status == 202 and body["variant"] == "tuned"
    status, body = await mon.post_feedback({"requestId": "plain", "thumbs": "down"})
    assert status == 202 and "variant" not in body
    status, body = await mon.post_feedback({"requestId": "odd", "rating": 3})
    assert status == 202 and "variant" not in body
    with open(os.path.join(fdir, c.FEEDBACK_FILE)) as fh:
        records = {r["requestId"]: r for r in map(json.loads, fh)}
    assert records["routed"]["variant"] == "tuned"
    assert "variant" not in records["plain"] and "variant" not in records["odd"]
