#!/usr/bin/env python3
"""taskstat.py PID... -> "CPU_NS WAKEUPS" summed over every thread of the processes
and of their direct children (nginx's workers are children of the PID we know).

CPU_NS: time on CPU (/proc/PID/task/TID/schedstat, first field, nanoseconds).
WAKEUPS: voluntary context switches (/proc/PID/task/TID/status): each is a sleep that
ended in a wake-up. Threads that exited between two samples are not counted.
"""
import os
import sys

pids = set(sys.argv[1:])
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            with open(f"/proc/{p}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[1] in sys.argv[1:]:
                    pids.add(p)
        except OSError:
            pass
cpu = wak = 0
for pid in pids:
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        continue
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                cpu += int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        wak += int(line.split()[1])
        except OSError:
            pass
print(cpu, wak)
