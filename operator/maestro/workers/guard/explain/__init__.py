"""`POST /v1/explain`: which parts of a prompt a model's response depends on.

The model server is the only model access: vLLM returns the log-probability of every prompt token
(`prompt_logprobs` on `/v1/completions`), so log p(response | prompt) under any perturbation of the
prompt is one scored sequence, and many perturbations go in one request (a list of prompts). That
works for every model the operator serves, without weights in the sidecar.

- `segments`: what is perturbed (token, word, sentence or message spans of the request's texts).
- `engine`: the model server as a scorer (chat template rendering, greedy generation, batched
  scoring with a cache, cost accounting).
- `methods`: leave-one-out occlusion (pure Python, the default), Kernel SHAP (`shap`) and LIME
  (`lime`'s text explainer) over binary segment masks; the libraries come from the `explain` extra
  and are imported on the first request that asks for them.
- `render`: the HTML heat map of an explanation (`?format=html`).
- `route`: the request steps (the same authorization, limits, rules and audit as chat).
"""
