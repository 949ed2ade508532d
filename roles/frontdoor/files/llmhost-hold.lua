-- Managed by the llmhost frontdoor role (roles/frontdoor/files/llmhost-hold.lua).
--
-- Hold a request to an expert that a deploy is restarting, instead of a 503.
--
-- Before a deploy restarts a changed preloaded expert it puts the expert's server in
-- maintenance over HAProxy's runtime API and waits for its sessions to end
-- (llmhost-admit drain); after the restart has passed the readiness gate it puts the
-- server back in service (llmhost-admit ready). Meanwhile the backend has no usable
-- server, and each non-lazy backend runs, just before its 503 "expert is down" line:
--
--     http-request lua.llmhost_hold <seconds> if { nbsrv() eq 0 }
--
-- This action waits while no server of the request's backend is up and at least one is
-- in maintenance or drain (a planned restart), polling the servers' state, at most
-- <seconds> (frontdoor_hold_s). A server down for any other reason (a crash, a failed
-- health check) is not waited for: the 503 comes at once, as before. When the action
-- returns, the backend's next line tests nbsrv() again: back in service, the request goes
-- on to it; still in maintenance after <seconds>, the 503.
--
-- The wait yields (core.msleep), so it does not count against tune.lua.session-timeout,
-- and HAProxy serves every other request meanwhile.

local POLL_MS = 200

-- true while no server of the backend is usable and one of them is in maintenance or drain
local function restarting(backend)
  local planned = false
  for _, server in pairs(backend.servers) do
    local status = server:get_stats()["status"] or ""
    if status:find("^MAINT") or status:find("^DRAIN") then
      planned = true
    elseif status:find("^UP") or status == "no check" then
      return false
    end
  end
  return planned
end

local function now_ms()
  local t = core.now()
  return t.sec * 1000 + t.usec // 1000
end

core.register_action("llmhost_hold", { "http-req" }, function(txn, seconds)
  local backend = core.backends[txn.f:be_name()]
  if backend == nil then
    return
  end
  local deadline = now_ms() + (tonumber(seconds) or 0) * 1000
  while restarting(backend) and now_ms() < deadline do
    core.msleep(POLL_MS)
  end
end, 1)
