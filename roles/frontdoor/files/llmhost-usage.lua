-- Managed by the llmhost frontdoor role (roles/frontdoor/files/llmhost-usage.lua).
--
-- Usage per API key and expert, from what the experts answered:
--   action  lua.llmhost_usage            (http-response, frontend openai)
--   service lua.llmhost_usage_metrics    Prometheus text of the counters below.
--
-- Every answer an expert sent counts one request under the key's id (txn.key_id; "-"
-- when the door has no keys), the expert and the status class. A JSON answer's "usage"
-- (prompt_tokens, completion_tokens: vLLM's own count) is added to the token counters;
-- the configuration waits for that body first (http-response wait-for-body). A streamed
-- answer (text/event-stream) is counted as a request and as streamed: HAProxy 2.6's Lua
-- cannot read a response body as it streams (Lua filters came with 2.8), so its tokens
-- are not in these counters (docs/frontdoor.md: where to read them instead).
-- Answers the door gave itself (401, 403, 429, 400, ...) and HAProxy's own 502/503/504
-- (an expert that timed out or closed) never reach this action: the access log has them,
-- with the key's id.

local cjson = require("cjson.safe").new()

local requests = {}   -- "<key>\t<expert>\t<class>" -> n
local streamed = {}   -- "<key>\t<expert>" -> n
local prompt = {}     -- "<key>\t<expert>" -> tokens
local completion = {} -- "<key>\t<expert>" -> tokens
local unread = {}     -- "<key>\t<expert>" -> JSON answers whose usage could not be read

-- whole, finite, not negative: anything else an answer reports adds nothing
local function add(t, k, n)
  n = tonumber(n)
  if n == nil or n ~= n or n < 0 or n == math.huge then
    return
  end
  t[k] = (t[k] or 0) + math.floor(n)
end

core.register_action("llmhost_usage", { "http-res" }, function(txn)
  local key = txn:get_var("txn.key_id") or "-"
  local expert = txn:get_var("txn.expert") or "-"
  local pair = key .. "\t" .. expert
  local status = math.tointeger(tonumber(txn.sf:status()) or 0) or 0  -- the fetch answers a string
  add(requests, pair .. "\t" .. string.format("%dxx", status // 100), 1)
  local ctype = txn.sf:res_fhdr("content-type") or ""
  if ctype:find("^text/event%-stream") then
    add(streamed, pair, 1)
    return
  end
  if status ~= 200 or not ctype:find("^application/json") then
    return
  end
  local doc = cjson.decode(txn.sf:res_body() or "")
  local usage = type(doc) == "table" and doc.usage or nil
  if type(usage) ~= "table" then
    add(unread, pair, 1)
    return
  end
  add(prompt, pair, usage.prompt_tokens)
  add(completion, pair, usage.completion_tokens)
end, 0)

local function labels(pair, extra)
  local key, expert = pair:match("^([^\t]*)\t([^\t]*)")
  return string.format('key="%s",expert="%s"%s', key, expert, extra or "")
end

local function family(out, name, help, kind, t, with_class)
  out[#out + 1] = "# HELP " .. name .. " " .. help
  out[#out + 1] = "# TYPE " .. name .. " " .. kind
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if with_class then
      local pair, class = k:match("^(.*)\t([^\t]*)$")
      out[#out + 1] = string.format("%s{%s} %d", name, labels(pair, string.format(',code="%s"', class)), t[k])
    else
      out[#out + 1] = string.format("%s{%s} %d", name, labels(k), t[k])
    end
  end
end

core.register_service("llmhost_usage_metrics", "http", function(applet)
  local out = {}
  family(out, "llmhost_usage_requests_total", "Answers an expert sent, by API key id, expert and status class.",
         "counter", requests, true)
  family(out, "llmhost_usage_streamed_total", "Of those, streamed answers (their tokens are not counted here).",
         "counter", streamed)
  family(out, "llmhost_usage_prompt_tokens_total", "Prompt tokens of non-streamed answers (vLLM's usage).",
         "counter", prompt)
  family(out, "llmhost_usage_completion_tokens_total", "Completion tokens of non-streamed answers (vLLM's usage).",
         "counter", completion)
  family(out, "llmhost_usage_unread_total", "JSON answers whose usage could not be read (over the buffer, or none).",
         "counter", unread)
  local body = table.concat(out, "\n") .. "\n"
  applet:set_status(200)
  applet:add_header("content-type", "text/plain; version=0.0.4")
  applet:add_header("content-length", tostring(#body))
  applet:start_response()
  applet:send(body)
end)
