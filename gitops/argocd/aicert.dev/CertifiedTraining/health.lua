-- Argo CD health of an aicert.dev CertifiedTraining.
--   Healthy      Succeeded, with a certificate and the Certified condition True
--   Degraded     Failed (the message says why: the operator's or the agent's documented reason)
--   Progressing  everything else, with the run's current message
-- Argo CD runs this with only its base, table and (safe) os libraries: no string library here.
local hs = {status = "Progressing", message = "waiting for the aicert operator to pick the run up"}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function described(text, fallback)
  if text ~= nil and text ~= "" then
    return text
  end
  return fallback
end

if obj.status == nil or obj.status.phase == nil then
  return hs
end

local status = obj.status
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = "the operator has not yet looked at generation " .. generation
  return hs
end

local certified = condition("Certified")
if status.phase == "Succeeded" then
  if certified ~= nil and certified.status == "True" and status.certificate ~= nil and status.certificate ~= "" then
    hs.status = "Healthy"
    hs.message = described(certified.message, "certified")
  else
    hs.status = "Degraded"
    hs.message = "Succeeded without a certificate in the status: verify before trusting the weights"
  end
  return hs
end

if status.phase == "Failed" then
  hs.status = "Degraded"
  local why = status.reason
  if certified ~= nil and certified.status == "False" then
    why = certified.reason
  end
  hs.message = described(why, "Failed") .. ": " .. described(status.message, "the run failed")
  return hs
end

hs.message = status.phase .. ": " .. described(status.message, "in progress")
return hs
