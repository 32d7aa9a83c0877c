#!/usr/bin/env python3
"""TLS handshakes on a chain's client -> gateway hop, from a tcpdump capture (tshark).

  tlscap.py count PCAP PORT...   print "HANDSHAKES RESUMED OFFERED": ServerHellos sent from
                                 the gateway PORTs, how many carry the pre_shared_key
                                 extension (type 41: a TLS 1.3 resumption), and how many
                                 ClientHellos to the PORTs offered one (the client's part)
  tlscap.py first PCAP PORT      describe the first TLS connection to PORT: version,
                                 cipher suite, key exchange group, resumption, and the
                                 sizes of the client's encrypted handshake records
The ports are decoded as TLS whatever their number (tshark -d tcp.port==PORT,tls).
"""
import subprocess
import sys

TLS13 = "0x0304"
SUITES = {"0x1301": "TLS_AES_128_GCM_SHA256", "0x1302": "TLS_AES_256_GCM_SHA384",
          "0x1303": "TLS_CHACHA20_POLY1305_SHA256"}
GROUPS = {"29": "X25519", "23": "secp256r1", "24": "secp384r1", "25": "secp521r1", "30": "X448"}


def tshark(pcap, ports, flt, fields):
    cmd = ["tshark", "-n", "-r", pcap]
    for p in ports:
        cmd += ["-d", f"tcp.port=={p},tls"]
    cmd += ["-Y", flt, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"tshark failed: {out.stderr.strip()[:300]}")
    return [line.split("\t") for line in out.stdout.splitlines() if line.strip()]


def server_hellos(pcap, ports):
    flt = "tls.handshake.type == 2 && (" + " || ".join(f"tcp.srcport == {p}" for p in ports) + ")"
    return tshark(pcap, ports, flt, ["tcp.stream", "tcp.srcport", "tls.handshake.type",
                                     "tls.handshake.extension.type", "tls.handshake.ciphersuite",
                                     "tls.handshake.extensions.supported_version",
                                     "tls.handshake.extensions_key_share_group"])


def shs(rows):
    """one entry per ServerHello (a frame may hold several handshake messages)"""
    out = []
    for r in rows:
        r += [""] * (7 - len(r))
        stream, port, types, exts, suite, ver, group = r[:7]
        out.append({"stream": int(stream), "port": port, "exts": exts.split(","), "suite": suite,
                    "ver": ver, "group": group})
    return out


if sys.argv[1] == "count":
    pcap, ports = sys.argv[2], sys.argv[3:]
    hs = shs(server_hellos(pcap, ports))
    flt = "tls.handshake.type == 1 && (" + " || ".join(f"tcp.dstport == {p}" for p in ports) + ")"
    offered = sum(1 for r in tshark(pcap, ports, flt, ["tls.handshake.extension.type"]) if "41" in r[0].split(","))
    print(len(hs), sum(1 for h in hs if "41" in h["exts"]), offered)
elif sys.argv[1] == "first":
    pcap, port = sys.argv[2], sys.argv[3]
    hs = shs(server_hellos(pcap, [port]))
    if not hs:
        print(f"  no TLS connection to port {port} in the capture")
        sys.exit(0)
    h = min(hs, key=lambda h: h["stream"])
    ver = h["ver"].split(",")[0] if h["ver"] else "?"
    suite = h["suite"].split(",")[0]
    group = h["group"].split(",")[0]
    print(f"  first connection (tcp stream {h['stream']}, to port {port}): "
          f"version {'TLSv1.3' if ver == TLS13 else ver or '? (no supported_versions: not TLS 1.3)'}, "
          f"cipher {SUITES.get(suite, suite)}, key exchange {GROUPS.get(group, group or '?')}, "
          f"resumed (pre_shared_key) {'yes' if '41' in h['exts'] else 'no'}")
    # the client's records on this stream: content type 23 after the ServerHello carry the
    # encrypted handshake (Certificate + CertificateVerify + Finished, or Finished alone)
    recs = tshark(pcap, [port], f"tcp.stream == {h['stream']} && tcp.dstport == {port} && tls.record",
                  ["tls.record.content_type", "tls.record.opaque_type", "tls.record.length"])
    lens = []
    for r in recs:
        r += [""] * (3 - len(r))
        plain = [t for t in r[0].split(",") if t]
        opaque = [t for t in r[1].split(",") if t]
        n = [int(x) for x in r[2].split(",") if x]
        # TLS 1.3 records (opaque type 23) follow the plaintext ones in a frame (ClientHello,
        # the compatibility ChangeCipherSpec)
        if opaque and len(n) == len(plain) + len(opaque):
            lens += n[len(plain):]
    first = lens[:3]
    if first:
        cert = "yes" if first[0] > 200 else "no"
        print(f"  client's first encrypted records: {', '.join(map(str, first))} bytes -> client "
              f"certificate sent: {cert} (Certificate + CertificateVerify of a P-256 certificate "
              f"take several hundred bytes; a Finished record alone is 53-69 bytes)")
    else:
        print("  client's encrypted records: none captured")
