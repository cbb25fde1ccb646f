import os, signal, socket, time
os.closerange(3, 4096)
a, b = socket.socketpair()
a.sendall(b"from a, " * 1000)
b.sendall(b"from b")
d1, d2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
for m in (b"one", b"two", b"three"):
    d1.send(m)
# A stream socket whose peer is gone, its last words still queued.
w, gone = socket.socketpair()
gone.sendall(b"last words")
gone.close()
go = []
signal.signal(signal.SIGUSR1, lambda *x: go.append(1))
print("pid", os.getpid(), flush=True)
print("ready", flush=True)
while not go:
    time.sleep(0.01)
got_b = b""
b.setblocking(False)
try:
    while True:
        chunk = b.recv(65536)
        if not chunk:
            break
        got_b += chunk
except BlockingIOError:
    pass
got_a = a.recv(100)
grams = [d2.recv(100) for _ in range(3)]
a.sendall(b"still connected")
print("b got", len(got_b), got_b == b"from a, " * 1000, flush=True)
print("a got", got_a.decode(), flush=True)
print("dgrams", b",".join(grams).decode(), flush=True)
w.settimeout(2)
left = w.recv(100)
try:
    w.send(b"x")
    wrote = "went through"
except BrokenPipeError:
    wrote = "EPIPE"
print("widowed", left.decode(), repr(w.recv(100)), wrote, flush=True)
print("after", b.recv(100).decode(), flush=True)
