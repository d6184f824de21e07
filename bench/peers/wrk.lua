-- wrk script for bench/peers/http_compare.py: POSTs the JSON bodies of the file named by $BODIES
-- (one per line) round-robin.
local bodies = {}
for line in io.lines(os.getenv("BODIES")) do
  bodies[#bodies + 1] = line
end
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, bodies[i])
end
