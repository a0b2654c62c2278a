"""The e2e tier: Maestro installed the way a user installs it, on the session cluster's real node.

- `maestro` (session): a `maestro.devcluster.lifecycle.DevEnv` on the session `cluster` after the
  images from images/ were built and imported into the node's containerd, the quickstart inputs put
  on their volume and the operator installed by the Helm chart (charts/maestro) as a pod. Tests talk
  to what it installed with `maestro.kubectl(...)`; the guard is reached through port-forward.

The cluster tier (tests/cluster/) runs before this one and uses host-process operators; from here on
the chart's operator is the only one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

IN_CI = bool(os.environ.get("CI"))


@pytest.fixture(scope="session")
def maestro(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from maestro.devcluster.cluster import ClusterError
    from maestro.devcluster.lifecycle import DevEnv

    env = DevEnv(tmp_path_factory.mktemp("dev"), cluster=cluster)
    try:
        model = env.prepare_model()
        env.import_images(env.build_images())
        env.prepare_inputs(model)
        env.install_operator()
    except ClusterError as e:
        pytest.fail(f"installing Maestro on the real node failed: {e}")
    yield env
    env.down()
