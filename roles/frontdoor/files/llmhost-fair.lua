-- Managed by the llmhost frontdoor role (roles/frontdoor/files/llmhost-fair.lua).
--
-- Fairness: one client (a key's id, or the address when no keys are set) may hold at most
-- <cap> of an expert's slots at once; its further requests wait here for one of its own
-- to end, so that another client finds a slot free instead of queueing behind it.
--
-- Each backend runs, before the line that tracks the request in the st_fair table:
--
--     http-request lua.llmhost_fair <cap> <seconds>
--
-- with txn.fair_key = "<client>/<expert>". The action reads how many requests track that
-- entry now (the table's "use" count: requests of this client in this expert, which are
-- tracked until they end) and waits while it is <cap> or more, at most <seconds>
-- (frontdoor_timeout_queue_s); it sets txn.fair_wait to "over" when the time ran out (the
-- configuration then answers 429). The look-up and the tracking are not one atomic step:
-- requests released in the same instant may go <cap> over by a few (documented).
--
-- The wait yields (core.msleep): HAProxy serves every other request meanwhile.

local POLL_MS = 50

local function now_ms()
  local t = core.now()
  return t.sec * 1000 + t.usec // 1000
end

local function in_use(table_, key)
  local entry = table_:lookup(key)
  return entry and (entry.use or 0) or 0
end

core.register_action("llmhost_fair", { "http-req" }, function(txn, cap, seconds)
  local key = txn:get_var("txn.fair_key")
  local st = core.backends["st_fair"]
  if key == nil or st == nil or st.stktable == nil then
    return
  end
  cap = tonumber(cap) or 1
  local deadline = now_ms() + (tonumber(seconds) or 0) * 1000
  local waited = false
  while in_use(st.stktable, key) >= cap do
    if now_ms() >= deadline then
      txn:set_var("txn.fair_wait", "over")
      return
    end
    waited = true
    core.msleep(POLL_MS)
  end
  if waited then
    txn:set_var("txn.fair_wait", "waited")
  end
end, 2)
