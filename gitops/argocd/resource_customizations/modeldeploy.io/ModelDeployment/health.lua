-- Health of a modeldeploy.io ModelDeployment, read from its status.
--
-- The status follows kstatus (sigs.k8s.io/cli-utils/pkg/kstatus): conditions Ready, Reconciling and
-- Stalled, and status.observedGeneration, the metadata.generation the operator last wrote status for.
-- Written without the string library, so that it runs as an argocd-cm customization without
-- resource.customizations.useOpenLibs. What each status means: docs/gitops.md of modeldeploy.
local hs = {}

-- Argo CD answers "Pending deletion" itself before it runs a health script; this is for other callers.
if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  local finalizers = obj.metadata.finalizers or {}
  if #finalizers > 0 then
    hs.message = "Pending deletion: waiting for the finalizers " .. table.concat(finalizers, ", ")
  else
    hs.message = "Pending deletion"
  end
  return hs
end

local status = obj.status or {}
local generation = obj.metadata.generation
if status.observedGeneration == nil or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  if generation ~= nil then
    hs.message = "Waiting for the operator to observe generation " .. generation
  else
    hs.message = "Waiting for the operator"
  end
  if status.observedGeneration ~= nil then
    hs.message = hs.message .. " (it last observed " .. status.observedGeneration .. ")"
  end
  return hs
end

local conditions = {}
for _, condition in ipairs(status.conditions or {}) do
  conditions[condition.type] = condition
end

local function holds(kind)
  return conditions[kind] ~= nil and conditions[kind].status == "True"
end

local function said(condition)
  local message = condition.message or ""
  if message == "" then
    return condition.reason or ""
  end
  return (condition.reason or "") .. ": " .. message
end

-- Stalled: the spec is invalid or refused by policy, the artifact store cannot be used, or a stage
-- failed. The operator does not get further without a change, even while other stages still run.
if holds("Stalled") then
  hs.status = "Degraded"
  hs.message = said(conditions["Stalled"])
  return hs
end

if holds("Ready") then
  hs.status = "Healthy"
  hs.message = conditions["Ready"].message or ""
  return hs
end

-- Queued: every Job the deployment has is suspended in a Kueue queue, waiting for admission (an
-- external event): nothing runs, and nothing is wrong.
if holds("Reconciling") and conditions["Reconciling"].reason == "Queued" then
  hs.status = "Suspended"
  hs.message = conditions["Reconciling"].message or ""
  return hs
end

hs.status = "Progressing"
if holds("Reconciling") then
  hs.message = conditions["Reconciling"].message or ""
elseif conditions["Ready"] ~= nil then
  hs.message = said(conditions["Ready"])
else
  hs.message = "Waiting for the operator"
end
return hs
