-- Managed by the llmhost frontdoor role (roles/frontdoor/files/llmhost-models.lua).
--
-- GET /v1/models as the API key sees it (loaded only when the door has keys):
--   service lua.llmhost_models
-- answers the model list of the request's key (txn.key_id, set by the key check): the
-- experts it may call, in the OpenAI list format. The lists are read once, at start, from
-- $LLMHOST_KEY_MODELS (llmhost-key-models.json: key id -> the list's JSON text, written
-- by llmhost.apikeys); a key with no list (which the key check would have refused) gets
-- an empty one.

local cjson = require("cjson.safe").new()
local lists = {}   -- key id -> JSON text of its model list
local EMPTY = '{"object":"list","data":[]}'

core.register_init(function()
  local path = os.getenv("LLMHOST_KEY_MODELS") or "/etc/haproxy/llmhost-key-models.json"
  local f = io.open(path, "r")
  if not f then
    core.Warning("llmhost-models: cannot open " .. path .. "; GET /v1/models lists nothing")
    return
  end
  local doc = cjson.decode(f:read("*a"))
  f:close()
  if type(doc) ~= "table" then
    core.Warning("llmhost-models: " .. path .. " is not a JSON object; GET /v1/models lists nothing")
    return
  end
  for id, text in pairs(doc) do
    if type(id) == "string" and type(text) == "string" then
      lists[id] = text
    end
  end
end)

core.register_service("llmhost_models", "http", function(applet)
  local id = applet:get_var("txn.key_id")
  local body = (id and lists[id]) or EMPTY
  applet:set_status(200)
  applet:add_header("content-type", "application/json")
  applet:add_header("content-length", tostring(#body))
  applet:start_response()
  applet:send(body)
end)
