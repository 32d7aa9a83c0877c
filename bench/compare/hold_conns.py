#!/usr/bin/env python3
"""Open N connections to a proxy, carry one request on each, then hold them idle.

Used by bench/compare.sh to measure RSS per idle connection.
  --mode absolute : "GET http://TARGET/1k" (forward-proxy keep-alive connection)
  --mode connect  : "CONNECT TARGET", then "GET /1k" inside the tunnel
  --mode origin   : "GET /1k" (a TCP tunnel such as stunnel or haproxy tcp mode)
Writes "OK ERR" to --ready once all connections are open (or the open phase hit its
deadline). On SIGUSR1 it writes "ALIVE CLOSED" (connections the proxy has not / has
closed) to READY.alive. Exits after --hold seconds at the latest.
"""
import argparse
import select
import signal
import socket
import sys
import time

from httpio import MODES, get_through

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--mode", choices=MODES, required=True)
ap.add_argument("--target", required=True)
ap.add_argument("--n", type=int, default=1000)
ap.add_argument("--path", default="/1k", help="origin path requested on each connection")
ap.add_argument("--open-deadline", type=float, default=60)
ap.add_argument("--hold", type=float, default=90)
ap.add_argument("--ready", required=True)
a = ap.parse_args()

socks, ok, err = [], 0, 0
deadline = time.time() + a.open_deadline
for i in range(a.n):
    if time.time() > deadline:
        print(f"open phase deadline reached after {i} connections", file=sys.stderr)
        break
    try:
        s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
        get_through(s, a.mode, a.target, a.path)
        socks.append(s)
        ok += 1
    except Exception as e:  # noqa: BLE001 - counted and reported
        err += 1
        if err <= 5:
            print(f"conn {i} error: {e}", file=sys.stderr)
with open(a.ready, "w") as f:
    f.write(f"{ok} {err}\n")


def alive(*_):
    closed = 0
    for s in socks:
        try:
            r, _, _ = select.select([s], [], [], 0)
            if r and s.recv(1, socket.MSG_PEEK) == b"":
                closed += 1
        except OSError:
            closed += 1
    with open(a.ready + ".alive", "w") as f:
        f.write(f"{len(socks) - closed} {closed}\n")


signal.signal(signal.SIGUSR1, alive)
end = time.time() + a.hold
while time.time() < end:
    time.sleep(min(1.0, max(0.0, end - time.time())))
