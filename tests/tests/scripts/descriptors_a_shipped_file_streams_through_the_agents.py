import hashlib, os, signal, time
os.closerange(3, 4096)
big = open("/tmp/big.bin", "w+b")
for i in range(28 * 1024):
    big.write(hashlib.sha256(b"%d" % i).digest() * 32)
big.flush()
os.makedirs("/tmp/kept", exist_ok=True)
kept = open("/tmp/kept/big.bin", "w+b")
kept.write(os.pread(big.fileno(), 28 << 20, 0))
kept.flush()
os.unlink("/tmp/big.bin")
go = []
signal.signal(signal.SIGUSR1, lambda *x: go.append(1))
def digest(f):
    h = hashlib.sha256()
    off = 0
    while True:
        b = os.pread(f.fileno(), 1 << 20, off)
        if not b:
            return h.hexdigest()
        h.update(b)
        off += len(b)
print("pid", os.getpid(), flush=True)
print("state", digest(big), digest(kept), flush=True)
while not go:
    time.sleep(0.01)
print("state", digest(big), digest(kept), flush=True)
