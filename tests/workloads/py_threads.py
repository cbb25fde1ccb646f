"""python3 with several threading.Thread computing checkable results
slowly; prints `pid`, `ready`, then `result <name> <hex>` per thread and
`done`. The results are the same on every run."""
import hashlib
import os
import sys
import threading
import time

os.closerange(3, 4096)
fast = "--fast" in sys.argv
results = {}
lock = threading.Lock()
start = threading.Event()


def work(name, seed, rounds):
    data = [hashlib.sha256(f"{seed}:{i}".encode()).digest() * 64 for i in range(4000)]
    start.wait()
    h = hashlib.sha256()
    for r in range(rounds):
        for i in range(r % 7, len(data), 7):
            h.update(data[i])
        if not fast:
            time.sleep(0.05)
    with lock:
        results[name] = h.hexdigest()


threads = [threading.Thread(target=work, name=f"t{i}", args=(f"t{i}", i * 7919, 40)) for i in range(6)]
for t in threads:
    t.start()
print("pid", os.getpid(), flush=True)
print("ready", flush=True)
start.set()
for t in threads:
    t.join()
for name in sorted(results):
    print("result", name, results[name], flush=True)
print("done", flush=True)
