"""HTTP/1.1 helpers shared by the bench clients (hold_conns.py, probe.py)."""


def read_response(s, body=True):
    """Reads one response from socket s: its head and, if body, its Content-Length
    body. Returns the status line (bytes). Raises IOError on a cut response."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise IOError("eof in response head")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = head.split(b"\r\n", 1)[0]
    clen = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            clen = int(v.strip())
    while body and len(rest) < clen:
        d = s.recv(65536)
        if not d:
            raise IOError("eof in response body")
        rest += d
    return status
