# Control-socket flood, as an unprivileged user: N connections held open, HEAVY
# of them midway through a frame that claims the largest length, MIB MiB sent
# each. Prints "held H refused R sent S" and then holds everything until
# killed (at most LIMIT seconds).
import socket, struct, sys, time
path, n, heavy, mib, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
conns, refused, sent = [], 0, 0
for i in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    try:
        s.connect(path)
    except OSError:
        refused += 1
        s.close()
        continue
    conns.append(s)
chunk = b"\0" * (1 << 20)
for s in conns[:heavy]:
    try:
        s.sendall(struct.pack("<4sHHQ", b"MGRT", 1, 0, 64 << 20))
        for _ in range(mib):
            s.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
print(f"held {len(conns)} refused {refused} sent {sent}", flush=True)
t = time.time()
while time.time() - t < limit:
    time.sleep(0.2)
