import os, random, signal, sys, time
os.closerange(3, 4096)
n = int(sys.argv[1]) << 20
mem = bytearray(bytes(range(251)) * (n // 251 + 1))[:n]
asked = []
signal.signal(signal.SIGUSR1, lambda *a: asked.append(1))
print("pid", os.getpid(), flush=True)
print("ready", flush=True)
forks = bad = 0
for _ in range(200000):
    i = random.randrange(0, n, 4096)
    pid = os.fork()
    if pid == 0:
        os._exit(0 if mem[i] == i % 251 else 1)
    _, st = os.waitpid(pid, 0)
    forks += 1
    bad += st != 0
    if forks % 200 == 0:
        print("forks", forks, "bad", bad, flush=True)
    time.sleep(0.002)
    if asked:
        asked.clear()
        ok = all(mem[j] == j % 251 for j in range(0, n, 4096))
        print("verify", "ok" if ok else "BAD", flush=True)
