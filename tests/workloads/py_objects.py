"""A python3 workload holding a few hundred MiB of objects and computing a
checkable result slowly: `result <hex>` is the same on every run."""
import hashlib
import os
import sys
import time

os.closerange(3, 4096)
mib = 200
fast = "--fast" in sys.argv
if "--mib" in sys.argv:
    mib = int(sys.argv[sys.argv.index("--mib") + 1])

# Half in bytes objects, half in a dict of ints and tuples.
blobs = [hashlib.sha256(i.to_bytes(8, "little")).digest() * 128 for i in range(mib * 128)]
table = {i: (i * i, str(i)) for i in range(mib * 2000)}
print("pid", os.getpid(), flush=True)
print("ready", flush=True)

h = hashlib.sha256()
rounds = 6
for r in range(rounds):
    for i in range(r, len(blobs), rounds):
        h.update(blobs[i])
    acc = 0
    for k in range(r, len(table), rounds):
        sq, s = table[k]
        acc = (acc * 31 + sq + len(s)) % (1 << 61)
    h.update(acc.to_bytes(8, "little"))
    if not fast:
        time.sleep(0.5)
print("result", h.hexdigest(), flush=True)
