"""`maestro guard`: the policy-enforcing OpenAI API proxy that fronts vLLM in every serving pod.

Modules, in request order: `contract` (env/ports shared with the builders), `config` (policy file →
immutable `Policy`), `auth` (hashed API keys), `limits` (per-key token buckets), `rules` (PII,
blocked terms, token caps), `upstream` (pooled HTTP/1.1 client to vLLM), `stream` (SSE output
modes), `proxy` (the aiohttp app), `errors` (OpenAI-shaped refusals), `audit` (JSON lines + monitor
events), `telemetry` (Prometheus + OpenTelemetry), `cli` (the entrypoint).
"""
