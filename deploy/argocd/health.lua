-- Argo CD health check for Maestro's kinds (llmops.dev/v1alpha1).
-- Healthy / Progressing / Degraded / Suspended from status.conditions, status.phase and
-- status.observedGeneration. One script serves all four kinds; obj.kind picks the phase rules.
local hs = { status = "Progressing", message = "Waiting for the Maestro operator" }
if obj.status == nil then
  return hs
end

local function condition(ctype)
  if obj.status.conditions == nil then return nil end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == ctype then return c end
  end
  return nil
end

local function msg(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    if c.reason ~= nil and c.reason ~= "" then return c.reason .. ": " .. c.message end
    return c.message
  end
  if c ~= nil and c.reason ~= nil then return c.reason end
  return fallback
end

local generation = obj.metadata.generation or 0
local observed = obj.status.observedGeneration or 0
if observed < generation then
  hs.message = "The operator has not yet observed generation " .. generation .. " (at " .. observed .. ")"
  return hs
end

local phase = obj.status.phase or ""
local ready = condition("Ready")
local degraded = condition("Degraded")

-- Ready reasons no retry clears: nothing changes until a spec does (this object's or one it references,
-- e.g. DatasetFailed on a job waiting for a dataset that failed its gates). Kept equal to
-- maestro.api.conditions.PERMANENT by a test.
local permanent = {
  BackoffLimitExceeded = true, BiasGateFailed = true, CanaryRolledBack = true, ChecksumMismatch = true,
  ConflictingPolicies = true, DatasetFailed = true, DeadlineExceeded = true, EvaluationFailed = true,
  GateFailed = true, ImagePullFailed = true, InvalidPattern = true, InvalidSpec = true, OOMKilled = true,
  PIIRejected = true, PolicyDenied = true, SchemaMismatch = true, TrainingFailed = true,
  TrainingJobFailed = true, ValidationFailed = true,
}

-- A terminal failure wins over everything else.
if phase == "Failed" or phase == "Invalid" then
  hs.status = "Degraded"
  hs.message = msg(degraded, msg(ready, "Phase " .. phase))
  return hs
end
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = msg(degraded, "Degraded")
  return hs
end
if ready ~= nil and ready.status == "False" and ready.reason ~= nil and permanent[ready.reason] then
  hs.status = "Degraded"
  hs.message = msg(ready, ready.reason)
  return hs
end

if obj.kind == "LLMTrainingJob" then
  if phase == "Succeeded" then
    hs.status = "Healthy"
    hs.message = msg(ready, "Training succeeded")
    return hs
  end
  if phase == "Queued" then
    hs.status = "Suspended"
    -- the operator reports the Kueue wait on Ready (reason Queued); there is no Queued condition
    hs.message = msg(ready, "Waiting for quota in the queue")
    return hs
  end
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = msg(ready, "Ready")
  return hs
end

local progressing = condition("Progressing")
hs.status = "Progressing"
hs.message = msg(ready, msg(progressing, "Phase " .. (phase ~= "" and phase or "Pending")))
return hs
