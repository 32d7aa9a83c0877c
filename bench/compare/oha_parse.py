#!/usr/bin/env python3
"""Read oha --output-format json on stdin; print "RPS P50_MS P99_MS ERRORS OK NOTE".

RPS counts 200 answers only. Requests cut off by the -z deadline are not errors;
non-200 answers and connection/TLS/proxy errors are. NOTE has no spaces ("-" if none).
"""
import json
import sys

try:
    j = json.load(sys.stdin)
    s = j["summary"]
    lp = j.get("latencyPercentiles") or {}
    codes = j.get("statusCodeDistribution") or {}
    ok = int(codes.get("200", 0))
    bad = {k: v for k, v in codes.items() if k != "200"}
    errs = {k: v for k, v in (j.get("errorDistribution") or {}).items() if "deadline" not in k.lower()}
    parts = [f"{v}x {k}" for k, v in sorted(errs.items(), key=lambda kv: -kv[1])[:3]]
    if bad:
        parts.insert(0, "non-200 answers: " + ", ".join(f"{v}x {k}" for k, v in bad.items()))
    note = "; ".join(parts).replace("\t", " ").replace(" ", "_") or "-"
    t = s.get("total") or 1
    p50 = (lp.get("p50") or 0) * 1000
    p99 = (lp.get("p99") or 0) * 1000
    print(round(ok / t), round(p50, 3), round(p99, 3), sum(errs.values()) + sum(bad.values()), ok, note)
except Exception as e:  # noqa: BLE001 - reported in the results
    print(0, 0, 0, -1, 0, ("unparsable_oha_output:_" + str(e)).replace(" ", "_").replace("\t", "_")[:200])
