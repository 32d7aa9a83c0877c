-- A new browser connection per request: absolute-form GET with Connection: close.
-- ORIGIN is passed as the first script argument (wrk ... -- 127.0.0.1:PORT).
local origin = "127.0.0.1:8080"
function init(args)
  if args[1] then origin = args[1] end
end
function request()
  return wrk.format("GET", "http://" .. origin .. "/bytes/1024", {
    ["Host"] = origin,
    ["Connection"] = "close",
  })
end
