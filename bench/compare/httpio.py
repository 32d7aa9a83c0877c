"""HTTP/1.1 helpers shared by the bench clients (compare/hold_conns.py, compare/probe.py,
measure/coldstart.py)."""
import collections

Response = collections.namedtuple("Response", "line status body")


def read_response(s, body=True, to_eof=False):
    """Reads one response from socket s: its head and, if body, its body: Content-Length
    bytes, or, with to_eof and no Content-Length, all up to the end of the connection
    (the answer to a request sent with "Connection: close"). Returns
    Response(line, status, body): the status line (bytes), its code (int) and the body
    (bytes; b"" without body). Raises IOError on a cut response or a status line without a code."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise IOError("eof in response head")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise IOError(f"bad status line {line!r}")
    clen = None
    for hl in head.split(b"\r\n")[1:]:
        k, _, v = hl.partition(b":")
        if k.strip().lower() == b"content-length":
            if not v.strip().isdigit():
                raise IOError(f"bad Content-Length {v.strip()!r}")
            clen = int(v.strip())
    if body and clen is None and to_eof:
        while True:
            d = s.recv(65536)
            if not d:
                break
            rest += d
    while body and len(rest) < (clen or 0):
        d = s.recv(65536)
        if not d:
            raise IOError("eof in response body")
        rest += d
    if not body:
        rest = b""
    elif clen is not None:
        rest = rest[:clen]
    return Response(line, int(parts[1]), rest)


MODES = ("connect", "absolute", "origin")


def get_through(s, mode, target, path, close=False):
    """One GET of PATH on TARGET (host:port) through a proxy, on connection s, as mode says:
    "absolute": GET http://TARGET/PATH (a forward proxy); "connect": CONNECT TARGET, then
    GET PATH inside the tunnel; "origin": GET PATH (a TCP tunnel to the origin). close adds
    "Connection: close". Returns the GET's Response; raises IOError unless the CONNECT (if
    any) and the GET were answered 200 (the GET's body read in full)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    if mode == "connect":
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        r = read_response(s, body=False)
        if r.status != 200:
            raise IOError(f"CONNECT answered {r.line!r}")
    if mode == "absolute":
        path = f"http://{target}{path}"
    conn = "Connection: close\r\n" if close else ""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {target}\r\n{conn}\r\n".encode())
    r = read_response(s)
    if r.status != 200:
        raise IOError(f"GET answered {r.line!r}")
    return r
