#!/usr/bin/python3
"""bench/callgrind/chat_json.py [N] - writes N (default 40,000) JSON chat
events to stdout, one per line, each 100-300 bytes, the same every run
(fixed seed): a payload for core_drive.c (CORE_DRIVE_PAYLOAD) and
deflate_engines.c that compresses like chat traffic rather than like
`abc...z` repeated."""
import json
import random
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 40000
rng = random.Random(18)
syl = ["ka", "lo", "mi", "ren", "to", "sa", "vel", "dor", "an", "is", "qu",
       "ber", "ni", "pol", "ma", "te", "ur", "gan", "fi", "sho"]
words = sorted({"".join(rng.choice(syl) for _ in range(rng.randint(1, 4)))
                for _ in range(900)})
names = [w.capitalize() + " " + rng.choice(words).capitalize()
         for w in rng.sample(words, 300)]
channels = ["general", "random", "ops", "deploys", "support", "sales",
            "design", "backend", "frontend", "alerts"]
events = ["message", "message", "message", "edit", "typing", "reaction"]
ts = 1796000000000
written = 0
while written < n:
    ts += rng.randint(1, 5000)
    uid = rng.randrange(len(names))
    ev = {"event": rng.choice(events), "channel": rng.choice(channels),
          "user": {"id": 1000 + uid, "name": names[uid],
                   "online": rng.random() < 0.8},
          "ts": ts,
          "text": " ".join(rng.choice(words)
                           for _ in range(rng.randint(3, 30)))}
    line = json.dumps(ev, separators=(",", ":"))
    if 100 <= len(line) <= 300:
        sys.stdout.write(line + "\n")
        written += 1
