import os, signal, time, sys
# Where to make the fifo.
fifo = sys.argv[1]
os.closerange(3, 4096)
os.mkfifo(fifo)
r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
w = os.open(fifo, os.O_WRONLY)
os.set_blocking(r, True)
os.write(w, b"waiting in the fifo")
go = []
signal.signal(signal.SIGUSR1, lambda *x: go.append(1))
print("pid", os.getpid(), flush=True)
while not go:
    time.sleep(0.01)
print("read", os.read(r, 100).decode(), flush=True)
os.write(w, b"and more")
print("read", os.read(r, 100).decode(), "blocking", os.get_blocking(r), flush=True)
time.sleep(600)
