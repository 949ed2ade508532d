-- Managed by the llmhost frontdoor role (roles/frontdoor/files/llmhost-check.lua).
--
-- The request body's checks, inside HAProxy, before anything is routed or logged:
--   action lua.llmhost_check <max_n> <max_depth>
-- decodes the JSON body with lua-cjson (escapes decoded, a repeated key's last value
-- kept: what vLLM's Python reads) and either sets txn.model (the body's "model", when it
-- has one) or sets txn.refuse to an OpenAI-style error body, which the configuration
-- answers with a 400. Refused:
--   - a body that is not UTF-8, not JSON, not an object, or nested deeper than <max_depth>
--     (vLLM would answer some of these with a {"detail": ...} body, or recurse for long);
--   - a "model" that is not a string of 1..256 printable ASCII characters without space
--     (a control character would otherwise reach the access log, which prints the model);
--   - "n" or "best_of" above <max_n> (frontdoor_max_n): each asks for that many answers.
-- A request it passes gets txn.checked; the configuration answers 500 to one without it
-- (the action failed: HAProxy would go on to the next rule), so a failure never lets a
-- request through unchecked.
-- Its own cjson instance: the depth limit set here does not reach the routing script.
local cjson = require("cjson.safe").new()

local MAX_MODEL_CHARS = 256

local function refuse(txn, message, param, code)
  txn:set_var("txn.refuse", cjson.encode({ error = {
    message = message, type = "invalid_request_error", param = param or cjson.null, code = code } }))
end

core.register_action("llmhost_check", { "http-req" }, function(txn, max_n, max_depth)
  max_n = tonumber(max_n)
  max_depth = tonumber(max_depth)
  cjson.decode_max_depth(max_depth)
  local body = txn.sf:req_body() or ""
  if utf8.len(body) == nil then
    return refuse(txn, "the request body is not valid UTF-8", nil, "invalid_json")
  end
  local req, err = cjson.decode(body)
  if req == nil then
    if err and err:find("too many nested", 1, true) then
      return refuse(txn, string.format("the request body nests JSON deeper than %d levels", max_depth), nil,
                    "invalid_json")
    end
    return refuse(txn, "the request body is not valid JSON", nil, "invalid_json")
  end
  if type(req) ~= "table" or body:find("^%s*%[") then
    return refuse(txn, "the request body must be a JSON object", nil, "invalid_json")
  end
  local model = req.model
  if model ~= nil and model ~= cjson.null then
    if type(model) ~= "string" or #model == 0 or #model > MAX_MODEL_CHARS or model:find("[^!-~]") then
      return refuse(txn, string.format("'model' must be a model name: 1 to %d printable ASCII characters, no "
                                       .. "spaces or control characters (GET /v1/models lists them)", MAX_MODEL_CHARS),
                    "model", "invalid_model")
    end
    txn:set_var("txn.model", model)
  end
  for _, field in ipairs({ "n", "best_of" }) do
    local v = req[field]
    if v ~= nil and v ~= cjson.null then
      local x = tonumber(v)
      if type(v) == "table" or (x ~= nil and (x > max_n or x ~= x)) then
        return refuse(txn, string.format("'%s' may be at most %d on this front door (frontdoor_max_n)", field, max_n),
                      field, "invalid_value")
      end
    end
  end
  txn:set_var("txn.checked", "1")
end, 2)
