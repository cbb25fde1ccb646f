import os, signal, time
os.closerange(3, 4096)  # only what the test gave it
marker = bytes(65 + (i * 7 + i // 3) % 26 for i in range(48))
blob = bytearray(marker * 40000)
def check(sig, frame):
    print("verify", "ok" if blob == bytearray(marker * 40000) else "BAD", flush=True)
signal.signal(signal.SIGUSR1, check)
print("pid", os.getpid(), flush=True)
print("ready", flush=True)
while True:
    time.sleep(0.05)
