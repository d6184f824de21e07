-- wrk script for bench/load.sh. Pre-formats every request once in init(), then cycles.
--   wrk ... -s bench/load.lua URL -- MODE FILE [PATH]
--   MODE check   : POST /v1/check, one body per line of FILE (checks.tsv: subject action resource)
--   MODE filter  : POST /v1/filter with the body in FILE (filter.json)
--   MODE headers : GET PATH (default /) carrying the check as headers (X-Portcullis-* by default)
--   MODE fa      : GET /s/<action>/<resource> with X-Auth-User: <subject> — a forward-auth target
--                  for the route table that bench/load.sh configures (identity from a header)
--   MODE get     : GET PATH (default /)
-- Forward-auth header names come from the environment (FA_TENANT_HEADER, …) with the defaults below.
local reqs, idx = {}, 0

local function hdrs(extra)
  local h = { ["Host"] = wrk.headers["Host"] }
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

function init(args)
  local mode, file, path = args[1] or "get", args[2], args[3] or "/"
  if mode == "filter" then
    local f = assert(io.open(file, "rb"))
    local body = f:read("*a")
    f:close()
    reqs[1] = wrk.format("POST", "/v1/filter", hdrs({ ["Content-Type"] = "application/json" }), body)
  elseif mode == "get" and not file then
    reqs[1] = wrk.format("GET", path, hdrs())
  else
    local ht = os.getenv("FA_TENANT_HEADER") or "X-Portcullis-Tenant"
    local hs = os.getenv("FA_SUBJECT_HEADER") or "X-Portcullis-Subject"
    local ha = os.getenv("FA_ACTION_HEADER") or "X-Portcullis-Action"
    local hr = os.getenv("FA_RESOURCE_HEADER") or "X-Portcullis-Resource"
    for line in io.lines(file) do
      local s, a, r = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)")
      if s then
        if mode == "check" then
          local body = string.format(
            '{"tenant":"s","subject":"%s","action":"%s","resource":"%s"}', s, a, r)
          reqs[#reqs + 1] = wrk.format("POST", "/v1/check",
            hdrs({ ["Content-Type"] = "application/json" }), body)
        elseif mode == "fa" then
          reqs[#reqs + 1] = wrk.format("GET", "/s/" .. a .. "/" .. r,
            hdrs({ ["X-Auth-User"] = s }))
        elseif mode == "headers" then
          reqs[#reqs + 1] = wrk.format("GET", path,
            hdrs({ [ht] = "s", [hs] = s, [ha] = a, [hr] = r }))
        else
          reqs[#reqs + 1] = wrk.format("GET", path, hdrs())
        end
      end
    end
  end
  assert(#reqs > 0, "no requests made")
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f "
      .. "non2xx=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.requests / summary.duration * 1e6,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
