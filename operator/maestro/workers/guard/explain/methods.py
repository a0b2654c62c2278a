"""Attribution methods over binary segment masks (True = the segment is kept).

Each takes the scorer `f` (masks -> outputs, see `engine.Scorer`), the number of segments and a
sample budget, and returns one attribution row per segment (one value per output) plus the
outputs with every segment kept. Occlusion is plain Python; SHAP and LIME are the libraries' own
estimators, run in a worker thread (they are synchronous) that hands each batch of masks back to
the event loop for scoring, so the server keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from maestro.workers.guard.errors import GuardError

F = Callable[[Sequence[Sequence[bool]]], Coroutine[Any, Any, list[list[float]]]]
Result = tuple[list[list[float]], list[float]]


async def occlusion(f: F, n: int, samples: int = 0, seed: int = 0) -> Result:
    """Leave-one-out: attribution of segment i = f(all kept) - f(all kept but i). n + 1 scored prompts."""
    full = [True] * n
    rows = [full] + [[j != i for j in range(n)] for i in range(n)]
    ys = await f(rows)
    base = ys[0]
    return [[b - y for b, y in zip(base, ys[i + 1], strict=True)] for i in range(n)], base


def _missing(extra: str, exc: ImportError) -> GuardError:
    return GuardError(
        501,
        f"This guard image lacks the {extra} package ({exc.name}); install maestro's `explain` extra "
        "or use method occlusion.",
        "explain_unsupported",
        param="method",
    )


def _bridge(f: F, loop: asyncio.AbstractEventLoop) -> Callable[[Any], Any]:
    """f as a synchronous numpy function for a worker thread: rows of 0/1 -> (rows, outputs)."""
    import numpy as np

    def call(x: Any) -> Any:
        masks = [[bool(v > 0.5) for v in row] for row in np.atleast_2d(x)]
        return np.asarray(asyncio.run_coroutine_threadsafe(f(masks), loop).result(), dtype=float)

    return call


async def kernel_shap(f: F, n: int, samples: int, seed: int = 0) -> Result:
    """Kernel SHAP (`shap.KernelExplainer`): background = every segment deleted, instance = every
    segment kept, so features are "segment present"; `samples` coalitions are scored (all 2^n - 2 of
    them when that is fewer: the exact Shapley values)."""
    try:
        import numpy as np
        import shap
    except ImportError as exc:
        raise _missing("shap", exc) from None
    loop = asyncio.get_running_loop()
    model = _bridge(f, loop)

    def run() -> Any:
        np.random.seed(seed)  # KernelExplainer samples coalitions with numpy's global generator
        explainer = shap.KernelExplainer(model, np.zeros((1, n)))
        return explainer.shap_values(np.ones((1, n)), nsamples=samples, l1_reg=False, silent=True)

    sv = await asyncio.to_thread(run)
    base = (await f([[True] * n]))[0]
    m = len(base)
    arr = np.stack([np.asarray(v) for v in sv], axis=-1) if isinstance(sv, list) else np.asarray(sv)
    arr = arr.reshape(n, m)  # (1, n, m), (1, n) or (n, m) -> one row per segment
    return arr.tolist(), base


async def lime_text(f: F, n: int, samples: int, seed: int = 0) -> Result:
    """LIME (`lime.lime_text.LimeTextExplainer`): the "document" is one placeholder word per segment,
    so LIME's own sampler (how many words to remove, uniformly, then which) and its locally weighted
    ridge fit run over segments; each perturbed document maps back to a keep-mask for the scorer."""
    try:
        import numpy as np
        from lime.lime_text import LimeTextExplainer
    except ImportError as exc:
        raise _missing("lime", exc) from None
    import re

    loop = asyncio.get_running_loop()
    model = _bridge(f, loop)
    word = re.compile(r"s(\d+)")
    base = (await f([[True] * n]))[0]
    m = len(base)

    def classifier(docs: list[str]) -> Any:
        masks = np.zeros((len(docs), n))
        for r, doc in enumerate(docs):
            for i in word.findall(doc):
                masks[r, int(i)] = 1.0
        return model(masks)

    def run() -> Any:
        explainer = LimeTextExplainer(
            bow=False, split_expression=r"\s+", mask_string="", random_state=seed, feature_selection="none"
        )
        return explainer.explain_instance(
            " ".join(f"s{i}" for i in range(n)),
            classifier,
            labels=tuple(range(m)),
            num_features=n,
            num_samples=samples,
        )

    exp = await asyncio.to_thread(run)
    rows = [[0.0] * m for _ in range(n)]
    for j in range(m):
        for feature, weight in exp.as_map()[j]:
            rows[int(feature)][j] = float(weight)
    return rows, base


METHODS: dict[str, Callable[[F, int, int, int], Awaitable[Result]]] = {
    "occlusion": occlusion,
    "shap": kernel_shap,
    "lime": lime_text,
}
