import os, signal, sys, time, hashlib
os.closerange(3, 4096)
data = [bytes([i % 251]) * 4096 for i in range(12000)]
digest = hashlib.sha256(b"".join(data)).hexdigest()
def verify(*_):
    ok = hashlib.sha256(b"".join(data)).hexdigest() == digest
    print("verify", "ok" if ok else "FAIL", flush=True)
signal.signal(signal.SIGUSR1, verify)
print("ready", os.getpid(), flush=True)
n = 0
while True:
    n += 1
    print("tick", n, os.getpid(), flush=True)
    time.sleep(0.01)
