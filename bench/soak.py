#!/usr/bin/env python3
"""Soak: mixed load through msc client -> two msc gateways -> msc origin for
DURATION seconds while the gateways are killed (SIGKILL) and restarted on the
same port in turn. Every response is checked byte for byte; the client's RSS
and descriptor count are sampled throughout.

Run by bench/soak.sh (which builds the release binary). Usage:
    soak.py MSC_BINARY OUT_DIR [DURATION_S]
Only 127.0.0.1. Every loop is bounded by the deadline; every socket has a
timeout.
"""
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

MSC, OUT = sys.argv[1], sys.argv[2]
DURATION = float(sys.argv[3]) if len(sys.argv) > 3 else 600.0
KILL_EVERY = float(os.environ.get("KILL_EVERY", "60"))
DOWN_FOR = float(os.environ.get("DOWN_FOR", "15"))
TIMEOUT = 30.0


def pattern():
    """The origin's /bytes/N pattern (src/cli/origin.rs `pattern`)."""
    x = 0x9E3779B97F4A7C15
    m = (1 << 64) - 1
    out = bytearray()
    for _ in range(65536):
        x ^= (x << 13) & m
        x ^= x >> 7
        x ^= (x << 17) & m
        out.append((x >> 32) & 0xFF)
    return bytes(out)


PAT = pattern()


def expected(n):
    reps = n // len(PAT) + 1
    return (PAT * reps)[:n]


EXPECTED_SHA = {}


def expected_sha(n):
    if n not in EXPECTED_SHA:
        EXPECTED_SHA[n] = hashlib.sha256(expected(n)).hexdigest()
    return EXPECTED_SHA[n]


class Proc:
    def __init__(self, name, args, work):
        self.name, self.args, self.work = name, args, work
        self.start()

    def start(self):
        self.out = open(os.path.join(self.work, self.name + ".out"), "a+")
        self.err = open(os.path.join(self.work, self.name + ".err"), "a")
        pos = self.out.tell()
        self.p = subprocess.Popen([MSC] + self.args, stdout=self.out, stderr=self.err, cwd=self.work)
        deadline = time.time() + 20
        while time.time() < deadline:
            self.out.seek(pos)
            text = self.out.read()
            if "ready" in text:
                self.ready = text
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit(f"{self.name} did not start: {open(self.err.name).read()[-2000:]}")

    def kill(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(timeout=10)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()


def listening(text):
    return re.search(r"listening on (\S+)", text).group(1)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}

    def add(self, lane, what, n=1):
        with self.lock:
            self.c.setdefault(lane, {}).setdefault(what, 0)
            self.c[lane][what] += n


def read_response(f):
    """Reads one HTTP/1.1 response from a file object: (status, headers, body).
    Raises on a cut (short body)."""
    line = f.readline()
    if not line:
        raise EOFError("closed before a response")
    status = int(line.split()[1])
    headers = {}
    while True:
        h = f.readline()
        if not h:
            raise EOFError("closed in the head")
        if h in (b"\r\n", b"\n"):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        n = int(headers["content-length"])
        body = f.read(n)
        if len(body) != n:
            raise EOFError(f"cut: {len(body)} of {n} bytes")
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            chunk = f.read(size)
            if len(chunk) != size:
                raise EOFError("cut in a chunk")
            body += chunk
            f.readline()
        body = bytes(body)
    else:
        body = f.read()
    return status, headers, body


def lane(name, stats, stop, proxy, origin, body):
    """Runs `body(sock_factory)` until stop; classifies outcomes."""
    rng = random.Random(name)
    while not stop.is_set():
        try:
            # True: exact bytes; False: a 200 with wrong bytes; a string: a
            # refusal the proxy made visibly (its status).
            ok = body(rng)
            if ok is True:
                stats.add(name, "ok")
            elif ok is False:
                stats.add(name, "corrupt")
                print(f"{name}: CORRUPT response", flush=True)
            else:
                stats.add(name, "refused:" + ok)
        except (OSError, EOFError, ValueError, IndexError) as e:
            stats.add(name, "failed")
            stats.add(name, "failed:" + type(e).__name__)
            time.sleep(0.05)


def connect(proxy):
    h, p = proxy.rsplit(":", 1)
    s = socket.create_connection((h, int(p)), timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def main():
    work = tempfile.mkdtemp(prefix="msc-soak-")
    subprocess.run([MSC, "pki", "init", "--dir", work, "--gateway-listen", "127.0.0.1:0",
                    "--http-port", "0", "--https-port", "0"], check=True, stdout=subprocess.DEVNULL)
    gw_cfg = open(os.path.join(work, "gateway.toml")).read()
    gw_cfg = gw_cfg.replace('access = "-"', 'access = "off"')
    procs = []
    origin = Proc("origin", ["origin", "--listen", "127.0.0.1:0", "--workers", "1"], work)
    procs.append(origin)
    origin_addr = listening(origin.ready)
    gws = {}
    for g in ("a", "b"):
        # A fixed port per gateway so a restart comes back at the same address.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cfg = re.sub(r'(?m)^listen = .*$', f'listen = "127.0.0.1:{port}"', gw_cfg)
        path = os.path.join(work, f"gateway-{g}.toml")
        open(path, "w").write(cfg)
        gws[g] = Proc("gw-" + g, ["gateway", "--config", path], work)
        procs.append(gws[g])
    servers = "".join(
        f'[[servers]]\nname = "{g}"\naddress = "127.0.0.1:{listening(p.ready).rsplit(":", 1)[1]}"\n'
        f'server_name = "localhost"\nhttp_port = 0\nhttps_port = 0\n' for g, p in gws.items())
    client_toml = os.path.join(work, "client-soak.toml")
    open(client_toml, "w").write(
        'workers = 2\n[tls]\nca = "ca.pem"\ncert = "client.pem"\nkey = "client-key.pem"\n'
        '[control]\nlisten = "127.0.0.1:0"\n[pac]\nfail_open = false\n' + servers)
    client = Proc("client", ["run", "--config", client_toml], work)
    procs.append(client)
    proxy = re.search(r"slot 1 http (\S+)", client.ready).group(1)
    stats = Stats()
    stop = threading.Event()

    def keepalive(rng):
        # One browser connection, 50 requests on it.
        s = connect(proxy)
        f = s.makefile("rb")
        try:
            for _ in range(50):
                n = rng.choice([0, 100, 1024, 16384, 70000])
                s.sendall(f"GET http://{origin_addr}/bytes/{n} HTTP/1.1\r\nHost: {origin_addr}\r\n\r\n".encode())
                st, _, b = read_response(f)
                if st != 200:
                    return str(st)
                if b != expected(n):
                    return False
                stats.add("keepalive", "requests")
            return True
        finally:
            s.close()

    def close_per_request(rng):
        n = rng.choice([1024, 4096, 65536])
        s = connect(proxy)
        try:
            path = rng.choice(["bytes", "chunked"])
            s.sendall(f"GET http://{origin_addr}/{path}/{n} HTTP/1.1\r\nHost: {origin_addr}\r\nConnection: close\r\n\r\n".encode())
            st, _, b = read_response(s.makefile("rb"))
            if st != 200:
                return str(st)
            return b == expected(n)
        finally:
            s.close()

    def connect_tunnel(rng):
        n = rng.choice([1024, 1 << 20])
        s = connect(proxy)
        try:
            s.sendall(f"CONNECT {origin_addr} HTTP/1.1\r\nHost: {origin_addr}\r\n\r\n".encode())
            f = s.makefile("rb")
            line = f.readline()
            st = int(line.split()[1])
            while f.readline() not in (b"\r\n", b"\n", b""):
                pass
            if st != 200:
                return str(st)
            s.sendall(f"GET /bytes/{n} HTTP/1.1\r\nHost: {origin_addr}\r\nConnection: close\r\n\r\n".encode())
            st, _, b = read_response(f)
            return st == 200 and b == expected(n)
        finally:
            s.close()

    def upload(rng):
        n = rng.choice([1 << 16, 1 << 20, 4 << 20])
        data = rng.randbytes(n)
        s = connect(proxy)
        try:
            s.sendall(f"POST http://{origin_addr}/sha256 HTTP/1.1\r\nHost: {origin_addr}\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n".encode())
            s.sendall(data)
            st, _, b = read_response(s.makefile("rb"))
            if st != 200:
                return str(st)
            stats.add("upload", "bytes", n)
            return b.decode().strip() == f"sha256={hashlib.sha256(data).hexdigest()} bytes={n}"
        finally:
            s.close()

    def download(rng):
        n = rng.choice([8 << 20, 32 << 20])
        s = connect(proxy)
        try:
            s.sendall(f"GET http://{origin_addr}/bytes/{n} HTTP/1.1\r\nHost: {origin_addr}\r\nConnection: close\r\n\r\n".encode())
            f = s.makefile("rb")
            line = f.readline()
            st = int(line.split()[1])
            length = None
            while True:
                h = f.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                if h.lower().startswith(b"content-length:"):
                    length = int(h.split(b":")[1])
            if st != 200:
                return str(st)
            h = hashlib.sha256()
            got = 0
            while got < length:
                chunk = f.read(min(1 << 20, length - got))
                if not chunk:
                    raise EOFError(f"cut: {got} of {length}")
                h.update(chunk)
                got += len(chunk)
            stats.add("download", "bytes", got)
            return h.hexdigest() == expected_sha(n)
        finally:
            s.close()

    lanes = [("keepalive", keepalive), ("keepalive", keepalive), ("close", close_per_request),
             ("close", close_per_request), ("connect", connect_tunnel), ("upload", upload), ("download", download)]
    threads = [threading.Thread(target=lane, args=(n, stats, stop, proxy, origin_addr, b), daemon=True)
               for n, b in lanes]
    t0 = time.time()
    for t in threads:
        t.start()
    samples = []
    events = []
    next_kill = t0 + KILL_EVERY
    victim = "a"
    down = None
    pid = client.p.pid
    while time.time() - t0 < DURATION:
        now = time.time()
        if down is None and now >= next_kill:
            gws[victim].kill()
            events.append((round(now - t0, 1), f"killed gateway {victim}"))
            down = (victim, now + DOWN_FOR)
        elif down is not None and now >= down[1]:
            gws[down[0]].start()
            events.append((round(time.time() - t0, 1), f"restarted gateway {down[0]}"))
            victim = "b" if down[0] == "a" else "a"
            down = None
            next_kill = time.time() + KILL_EVERY - DOWN_FOR
        rss = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        samples.append((round(now - t0, 1), rss, fds))
        if client.p.poll() is not None:
            raise SystemExit("the client died")
        time.sleep(5)
    stop.set()
    for t in threads:
        t.join(timeout=TIMEOUT + 5)
    # After the load: the client settles (idle tunnels are kept; connections closed).
    time.sleep(3)
    rss = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    samples.append((round(time.time() - t0, 1), rss, fds))
    status = subprocess.run([MSC, "status", "--control", re.search(r"control http://([^/]+)/", client.ready).group(1), "--json"],
                            capture_output=True, text=True, timeout=10).stdout
    for p in procs:
        p.stop()
    first = [s for s in samples if 60 <= s[0] < 120] or samples[:3]
    last = samples[-13:-1] or samples[-3:]
    avg = lambda xs, i: sum(x[i] for x in xs) / len(xs)
    corrupt = sum(v.get("corrupt", 0) for v in stats.c.values())
    report = {
        "duration_s": DURATION,
        "kill_every_s": KILL_EVERY,
        "down_for_s": DOWN_FOR,
        "lanes": stats.c,
        "corrupt": corrupt,
        "events": events,
        "rss_kib": {"minute_2_avg": avg(first, 1), "last_minute_avg": avg(last, 1),
                    "max": max(s[1] for s in samples), "after_load": samples[-1][1]},
        "fds": {"minute_2_avg": avg(first, 2), "last_minute_avg": avg(last, 2),
                "max": max(s[2] for s in samples), "after_load": samples[-1][2]},
        "samples": samples,
    }
    os.makedirs(OUT, exist_ok=True)
    json.dump(report, open(os.path.join(OUT, "soak.json"), "w"), indent=1)
    open(os.path.join(OUT, "soak-status.json"), "w").write(status)
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))
    subprocess.run(["rm", "-rf", work])
    if corrupt:
        print(f"FAIL: {corrupt} corrupt responses", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
