#!/usr/bin/env python3
"""N requests, each on a new connection to a proxy (bench/compare.sh's resumption probe).

  --mode absolute : "GET http://TARGET/1k" with "Connection: close"
  --mode connect  : "CONNECT TARGET", then "GET /1k" inside the tunnel, then close
  --mode origin   : "GET /1k" with "Connection: close" (a TCP tunnel port)
Requests run one after the other (each connection is closed before the next opens).
Prints "OK ERR" (a request is OK when its answer is a complete 200 with the body).
Bounded: --deadline seconds in all, 10 s per request.
"""
import argparse
import socket
import sys
import time

from httpio import MODES, get_through

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--mode", choices=MODES, required=True)
ap.add_argument("--target", required=True)
ap.add_argument("--n", type=int, default=200)
ap.add_argument("--path", default="/1k")
ap.add_argument("--deadline", type=float, default=60)
a = ap.parse_args()

ok = err = 0
end = time.time() + a.deadline
for i in range(a.n):
    if time.time() > end:
        print(f"deadline reached after {i} requests", file=sys.stderr)
        break
    try:
        with socket.create_connection(("127.0.0.1", a.port), timeout=10) as s:
            get_through(s, a.mode, a.target, a.path, close=True)
            ok += 1
    except Exception as e:  # noqa: BLE001 - counted and reported
        err += 1
        if err <= 5:
            print(f"request {i} error: {e}", file=sys.stderr)
print(ok, err)
