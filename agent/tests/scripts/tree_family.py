# A parent, a child in a process group of its own writing to the parent
# through a pipe and into a shared anonymous page, the two talking over a
# socketpair (bytes queued both ways at the move), and a zombie. After the
# move (SIGUSR1) the parent reads what the child wrote before and after,
# sees the child's write in the shared page, reaps both children with
# their exit codes, and prints its verdict after the child's own line.
import mmap, os, signal, socket, time

os.closerange(3, 4096)
go = []
signal.signal(signal.SIGUSR1, lambda *a: go.append(1))
shared = mmap.mmap(-1, 4096, flags=mmap.MAP_SHARED)
shared[:6] = b"parent"
r, w = os.pipe()
s1, s2 = socket.socketpair()
child = os.fork()
if child == 0:
    os.close(r)
    s1.close()
    s2.send(b"ping")
    os.setpgid(0, 0)
    os.write(w, b"before")
    while not go:
        time.sleep(0.01)
    shared[:6] = b"child!"
    queued = s2.recv(6, socket.MSG_WAITALL)
    pong = s2.recv(4, socket.MSG_WAITALL)
    # Its stdout is the parent's open file: one offset, so the parent's
    # verdict lands after this line, not over it.
    print("child after the move", flush=True)
    os.write(w, b" after ppid=%d %s %s" % (os.getppid(), queued, pong))
    os._exit(7)
zombie = os.fork()
if zombie == 0:
    os._exit(5)
os.close(w)
s2.close()
s1.send(b"queued")
time.sleep(0.3)
print("ready", os.getpid(), child, zombie, flush=True)
while not go:
    time.sleep(0.01)
problems = []
got = os.read(r, 100)
if got != b"before":
    problems.append(f"read {got!r} first")
ping = s1.recv(4, socket.MSG_WAITALL)
if ping != b"ping":
    problems.append(f"socketpair gave {ping!r}")
s1.send(b"pong")
if os.getpgid(child) != child:
    problems.append(f"child in group {os.getpgid(child)}")
os.kill(child, signal.SIGUSR1)
got = b""
while True:
    chunk = os.read(r, 100)
    if not chunk:
        break
    got += chunk
if got != b" after ppid=%d queued pong" % os.getpid():
    problems.append(f"then {got!r}")
if shared[:6] != b"child!":
    problems.append(f"the shared page holds {shared[:6]!r}")
for pid, code in ((child, 7), (zombie, 5)):
    reaped, status = os.waitpid(pid, 0)
    if (reaped, os.WEXITSTATUS(status)) != (pid, code):
        problems.append(f"waitpid({pid}) gave {reaped} status {status:#x}")
print("verdict", "ok" if not problems else "FAIL: " + "; ".join(problems), flush=True)
time.sleep(60)
