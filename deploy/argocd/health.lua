-- Argo CD health check for pgbaseline.io/DatabaseSecurityPolicy.
-- Reads the kstatus-style conditions the operator writes (Ready, Reconciling, Stalled) and the
-- generations, and never looks at timestamps. Lua 5.1 (Argo CD runs gopher-lua).
local hs = {}

local function condition(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function message(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local stalled = condition(conditions, "Stalled")
local reconciling = condition(conditions, "Reconciling")
local ready = condition(conditions, "Ready")

-- A condition written for an older generation says nothing about the current spec.
if ready ~= nil and generation ~= nil and ready.observedGeneration ~= nil
    and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to evaluate generation " .. tostring(generation)
  return hs
end

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message(stalled, "Stalled: " .. tostring(stalled.reason))
  return hs
end

if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = message(reconciling, "Reconciling")
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message(ready, "All selected databases comply")
  return hs
end

if ready.status == "False" then
  if ready.reason == "PendingReboot" then
    -- Settings are in place and take effect at the next (allowed) reboot.
    hs.status = "Progressing"
  else
    -- NonCompliant, RemediationFailed, NoDatabasesSelected and any other reason.
    hs.status = "Degraded"
  end
  hs.message = message(ready, tostring(ready.reason))
  return hs
end

hs.status = "Progressing"
hs.message = message(ready, "Ready is " .. tostring(ready.status))
return hs
