import os, signal, time
os.closerange(3, 4096)
f = open("/tmp/notes.txt", "w+")
f.write("host1 notes, longer than the other\n")
f.flush()
go = []
signal.signal(signal.SIGUSR1, lambda *a: go.append(1))
print("pid", os.getpid(), flush=True)
while not go:
    time.sleep(0.01)
print("mine:", os.pread(f.fileno(), 100, 0).decode(), end="", flush=True)
f.write("written on host2\n")
f.flush()
print("now:", os.pread(f.fileno(), 100, 0).decode().replace(chr(10), "|"), flush=True)
time.sleep(600)
