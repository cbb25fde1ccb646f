# Eight (or N) clients of a redis server at ADDR:PORT for SECS seconds, each
# on its own connection doing SET then GET of its own key, one request at
# a time, checking every answer. Prints one JSON line at the end: request
# completions per 100 ms bucket (from "t0", unix seconds), the longest gap
# between two answers one client saw and when, and the errors.
import json, socket, sys, threading, time

addr, port, n, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
t0 = time.time()
buckets = [0] * (int(secs * 10) + 50)
lock = threading.Lock()
gaps = []
errors = []

def reply(f):
    line = f.readline()
    if line.startswith(b"$"):
        k = int(line[1:])
        return f.read(k + 2)[:-2] if k >= 0 else None
    return line.rstrip(b"\r\n")

def client(i):
    try:
        s = socket.create_connection((addr, port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        last, worst, worst_at, k = time.time(), 0.0, 0.0, 0
        while time.time() - t0 < secs:
            k += 1
            v = b"%d-%d" % (i, k)
            s.sendall(b"SET key:%d %s\r\n" % (i, v))
            if reply(f) != b"+OK":
                raise RuntimeError("bad SET answer")
            s.sendall(b"GET key:%d\r\n" % i)
            if reply(f) != v:
                raise RuntimeError("bad GET answer")
            now = time.time()
            if now - last > worst:
                worst, worst_at = now - last, last
            last = now
            with lock:
                b = int((now - t0) * 10)
                if b < len(buckets):
                    buckets[b] += 2
        with lock:
            gaps.append((worst, worst_at))
    except Exception as e:
        with lock:
            errors.append("client %d: %r" % (i, e))

threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join()
worst = max(gaps, default=(0.0, 0.0))
print(json.dumps({"t0": t0, "bucket_ms": 100, "counts": buckets,
                  "max_gap_ms": worst[0] * 1000, "max_gap_at": worst[1],
                  "errors": errors}), flush=True)
