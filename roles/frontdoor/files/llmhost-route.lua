-- Managed by the llmhost frontdoor role (roles/frontdoor/files/llmhost-route.lua).
--
-- Routing by meaning for `model: auto` (or no model), inside HAProxy:
--   action  lua.llmhost_route   embeds the last user message through the pooling
--                               expert (core.httpclient through the proxy route_embed,
--                               whose timeouts and this call's bound it whole, connect
--                               included, to timeout_ms), takes
--                               the nearest domain centroid and sets txn.model to that
--                               expert; on any trouble it leaves txn.model unset, and
--                               the configuration sends the request to the default expert.
--   service lua.llmhost_route_metrics   Prometheus text of the counters below.
-- The same arithmetic lives in llmhost/routing.py (centroids, nearest), tested there.
local cjson = require("cjson.safe")

local conf = { timeout_ms = 50, max_text_bytes = 2000 }
local centroids = {}         -- { {expert = "coder", vec = {...}}, ... }
local loaded = "no"          -- "yes" or why not, for the log and the metrics
local chosen = {}            -- expert_id -> requests routed there by meaning
local fallback = {}          -- reason -> requests sent to the default expert
local seconds_sum, seconds_count = 0.0, 0

local function read_json(path)
  local f = io.open(path, "r")
  if not f then return nil, "cannot open " .. path end
  local s = f:read("*a")
  f:close()
  local v, err = cjson.decode(s)
  if v == nil then return nil, path .. ": " .. tostring(err) end
  return v
end

core.register_init(function()
  local path = os.getenv("LLMHOST_ROUTE_CONFIG") or "/etc/haproxy/llmhost-route.json"
  local c, err = read_json(path)
  if not c then loaded = err; core.Warning("llmhost-route: " .. err .. "; auto goes to the default expert"); return end
  conf = c
  local cents, err2 = read_json(conf.centroids_file or "")
  if not cents or type(cents.centroids) ~= "table" then
    loaded = err2 or "no centroids"
    core.Warning("llmhost-route: " .. loaded .. "; auto goes to the default expert")
    return
  end
  for _, d in ipairs(cents.centroids) do
    if type(d.expert_id) == "string" and type(d.vector) == "table" then
      centroids[#centroids + 1] = { expert = d.expert_id, vec = d.vector }
      chosen[d.expert_id] = 0
    end
  end
  loaded = "yes"
  core.Info("llmhost-route: " .. #centroids .. " domains, embedder " .. tostring(conf.embedder_url))
end)

-- The text that decides: the last user message (its text parts), else a prompt.
local function last_user_text(req)
  if type(req) ~= "table" then return nil end
  if type(req.messages) == "table" then
    for i = #req.messages, 1, -1 do
      local m = req.messages[i]
      if type(m) == "table" and m.role == "user" then
        local c = m.content
        if type(c) == "string" then return c end
        if type(c) == "table" then
          local parts = {}
          for _, p in ipairs(c) do
            if type(p) == "table" and p.type == "text" and type(p.text) == "string" then parts[#parts + 1] = p.text end
          end
          return table.concat(parts, "\n")
        end
        return nil
      end
    end
  end
  if type(req.prompt) == "string" then return req.prompt end
  return nil
end

-- The first n bytes of s, cut on a UTF-8 character boundary (never inside a character:
-- the embedder would get invalid UTF-8).
local function utf8_head(s, n)
  if #s <= n then return s end
  local i = n
  -- byte i + 1 is a continuation byte (10xxxxxx): the cut would split its character
  while i > 0 and s:byte(i + 1) >= 0x80 and s:byte(i + 1) < 0xC0 do i = i - 1 end
  return s:sub(1, i)
end

local function nearest(vec)
  local n = 0.0
  for i = 1, #vec do n = n + vec[i] * vec[i] end
  n = math.sqrt(n)
  if n == 0 then return nil end
  local best, score = nil, -2.0
  for _, c in ipairs(centroids) do
    local s = 0.0
    for i = 1, #vec do s = s + vec[i] * (c.vec[i] or 0) end
    s = s / n
    if s > score then best, score = c.expert, s end
  end
  return best, score
end

local function fall_back(txn, reason)
  fallback[reason] = (fallback[reason] or 0) + 1
  txn:set_var("txn.route", "fallback:" .. reason)
end

local function now_s()
  local t = core.now()
  return t.sec + t.usec / 1e6
end

core.register_action("llmhost_route", { "http-req" }, function(txn)
  if loaded ~= "yes" or #centroids == 0 then return fall_back(txn, "no_centroids") end
  local text = last_user_text(cjson.decode(txn.sf:req_body() or ""))
  if type(text) ~= "string" or text == "" then return fall_back(txn, "no_text") end
  -- Marked down by its health check: no call (the httpclient would retry a refused
  -- connection for about 3 s).
  if conf.embedder_backend and (tonumber(txn.f:nbsrv(conf.embedder_backend)) or 0) == 0 then
    return fall_back(txn, "down")
  end
  local t0 = now_s()
  -- the embedder keeps the text's first tokens, up to its max_model_len (truncate_prompt_tokens -1)
  local body = cjson.encode({ model = conf.embedder_model, input = utf8_head(text, conf.max_text_bytes),
                              truncate_prompt_tokens = conf.truncate_prompt_tokens,
                              truncation_side = conf.truncation_side })
  local ok, res = pcall(function()
    -- dst: the proxy route_embed (connect and answer each bounded by timeout_ms,
    -- no retry); this call's own timeout counts from its connect to it, which is at once
    return core.httpclient():post{
      url = conf.embedder_url, dst = conf.embedder_dst, timeout = conf.timeout_ms, body = body,
      headers = { ["content-type"] = { "application/json" }, ["content-length"] = { tostring(#body) } },
    }
  end)
  local took = now_s() - t0
  seconds_sum = seconds_sum + took
  seconds_count = seconds_count + 1
  -- Out of time, whichever timer fired first: the call's own (no status back) or the
  -- proxy's (504: no answer; 503 late: no connect). The same budget bounds both, so
  -- either may win the race; both are a timeout. A refused connect fails at once: down.
  local late = took * 1000 >= 0.8 * conf.timeout_ms
  local status = ok and type(res) == "table" and res.status or nil
  if status == 504 or (late and (status == nil or status == 503)) then return fall_back(txn, "timeout") end
  if status == nil then return fall_back(txn, "error") end
  if status == 503 then return fall_back(txn, "down") end
  if status ~= 200 then return fall_back(txn, "error") end
  local doc = cjson.decode(res.body or "")
  local vec = type(doc) == "table" and type(doc.data) == "table" and type(doc.data[1]) == "table" and doc.data[1].embedding
  if type(vec) ~= "table" then return fall_back(txn, "error") end
  local expert = nearest(vec)
  if not expert then return fall_back(txn, "error") end
  chosen[expert] = (chosen[expert] or 0) + 1
  txn:set_var("txn.model", expert)
  txn:set_var("txn.route", "embedding")
end, 0)

core.register_service("llmhost_route_metrics", "http", function(applet)
  local out = {
    "# HELP llmhost_route_loaded 1 when the front door holds route centroids (auto routes by meaning).",
    "# TYPE llmhost_route_loaded gauge",
    "llmhost_route_loaded " .. (loaded == "yes" and "1" or "0"),
    "# HELP llmhost_route_chosen_total Requests for auto routed by meaning, by expert.",
    "# TYPE llmhost_route_chosen_total counter",
  }
  for e, n in pairs(chosen) do out[#out + 1] = string.format('llmhost_route_chosen_total{expert="%s"} %d', e, n) end
  out[#out + 1] = "# HELP llmhost_route_fallback_total Requests for auto sent to the default expert, by reason."
  out[#out + 1] = "# TYPE llmhost_route_fallback_total counter"
  for _, r in ipairs({ "timeout", "down", "error", "no_text", "no_centroids" }) do
    out[#out + 1] = string.format('llmhost_route_fallback_total{reason="%s"} %d', r, fallback[r] or 0)
  end
  out[#out + 1] = "# HELP llmhost_route_embed_seconds Time spent asking the embedder, per auto request."
  out[#out + 1] = "# TYPE llmhost_route_embed_seconds summary"
  out[#out + 1] = string.format("llmhost_route_embed_seconds_sum %.6f", seconds_sum)
  out[#out + 1] = string.format("llmhost_route_embed_seconds_count %d", seconds_count)
  local body = table.concat(out, "\n") .. "\n"
  applet:set_status(200)
  applet:add_header("content-type", "text/plain; version=0.0.4")
  applet:add_header("content-length", tostring(#body))
  applet:start_response()
  applet:send(body)
end)
