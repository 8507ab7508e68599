-- The request wrk sends in benches/e2e/run.sh: an agent's data request with its
-- bearer token, declared purpose and case reference (servers that ignore the
-- headers, nginx and `caf-broker simulate`, answer the same path).
--
-- E2E_TOKEN   the bearer token (`caf-broker token ...`)
-- E2E_PATH    the path, e.g. /v1/allocataires/1000002; with E2E_RANDOM set,
--             the prefix to which a random generated dossier's number is added
-- E2E_RANDOM  a count N: each request asks for one of the N generated dossiers
--             (2000000 to 2000000 + N - 1) at random

local token = os.getenv("E2E_TOKEN")
local path = os.getenv("E2E_PATH")
local random = tonumber(os.getenv("E2E_RANDOM") or "")

wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["X-Purpose"] = "verification_radiation"
wrk.headers["X-Case-Reference"] = "BENCH-1"

if random then
  math.randomseed(os.time())
  request = function()
    return wrk.format(nil, path .. (2000000 + math.random(0, random - 1)))
  end
end
