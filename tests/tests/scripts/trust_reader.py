import os, signal, sys, time
os.closerange(3, 4096)  # what the harness left open
fd = os.open(sys.argv[1], os.O_RDONLY)
asked = []
signal.signal(signal.SIGUSR1, lambda *a: asked.append(1))
print("pid", os.getpid(), flush=True)
for _ in range(6000):
    if asked:
        asked.clear()
        data = os.pread(fd, 1 << 20, 0)
        print("read", len(data), "root:" in data.decode("latin-1"), data.count(0), flush=True)
    time.sleep(0.02)
