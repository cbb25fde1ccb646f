import os, signal, time
os.closerange(3, 4096)
mem = bytearray(32 << 20)
mem[::4096] = b"\x01" * len(mem[::4096])
go = []
signal.signal(signal.SIGUSR2, lambda *a: go.append(1))
print("pid", os.getpid(), flush=True)
for i in range(1, 6001):
    if go:
        go.clear()
        for _ in range(300):
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
        print("forked", flush=True)
    print("tick", i, time.time_ns(), flush=True)
    time.sleep(0.02)
