"""Normalise sequence.py's records for comparison: what legitimately
differs between two runs (times, durations, PIDs, journal stamps, random
names) is replaced by a placeholder. Reads JSON lines, writes them
pretty-printed, one record after another."""

import json
import re
import sys

RULES = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?"), "<TIME>"),
    (re.compile(r"\b1[6-9]\d{8}(\.\d+)?\b"), "<UNIXTIME>"),
    (re.compile(r"\b\d+(\.\d+)? ?(s|ms|µs)\b(?! ?\()"), "<DURATION>"),
    (re.compile(r"\b(pid|PID|process) \d+"), r"\1 <PID>"),
    (re.compile(r"\[\d+\]"), "[<PID>]"),
    (re.compile(r"\b[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d\b"), "<JOURNALTIME>"),
    (re.compile(r"\.tmp[A-Za-z0-9_.-]{4,}"), ".tmp<RANDOM>"),
    (re.compile(r"/(staging|trash)/[^/\s\"']+"), r"/\1/<RANDOM>"),
]
TIME_KEYS = {"deployed", "deployed_at", "since", "started_at", "active_since", "at", "time",
             "ActiveEnterTimestamp", "installed", "extracted", "created"}


def text(s):
    for rx, rep in RULES:
        s = rx.sub(rep, s)
    return s


def walk(v, key=None):
    if isinstance(v, dict):
        return {text(k): walk(x, k) for k, x in v.items()}
    if isinstance(v, list):
        return [walk(x) for x in v]
    if isinstance(v, str):
        return text(v)
    if key in TIME_KEYS and isinstance(v, (int, float)):
        return "<TIME>"
    if key in {"pid", "main_pid", "MainPID", "duration", "seconds", "elapsed"}:
        return "<N>"
    return v


for line in sys.stdin:
    line = line.strip()
    if not line.startswith("{"):
        continue
    print(json.dumps(walk(json.loads(line)), indent=1, sort_keys=True, ensure_ascii=False))
