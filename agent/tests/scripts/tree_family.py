# A family for a move on one host. The parent holds 16 MiB of private
# memory its children share copy-on-write; a child in a process group of
# its own changes one page of it, writes to the parent through a pipe and
# into a shared anonymous page, talks to it over a socketpair (bytes
# queued both ways at the move) and has a child of its own leading its own
# session; two zombies, one that exited with 5, one killed by SIGTERM.
# After the move (SIGUSR1) the parent checks what the child sent, the
# private memory of both, reaps its children with their statuses, and
# prints its verdict after the child's own line (one open file, one
# offset).
import ctypes, mmap, os, signal, socket, time

os.closerange(3, 4096)
go = []
signal.signal(signal.SIGUSR1, lambda *a: go.append(1))
PAGES = 4096
private = mmap.mmap(-1, PAGES * 4096, flags=mmap.MAP_PRIVATE)
for i in range(PAGES):
    private[i * 4096 : i * 4096 + 8] = b"page%04d" % i
base = ctypes.addressof(ctypes.c_char.from_buffer(private))
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
    private[7 * 4096 : 7 * 4096 + 8] = b"child!!!"
    grandchild = os.fork()
    if grandchild == 0:
        os.setsid()
        while True:
            time.sleep(1)
    os.write(w, b"before %d" % grandchild)
    while not go:
        time.sleep(0.01)
    shared[:6] = b"child!"
    queued = s2.recv(6, socket.MSG_WAITALL)
    pong = s2.recv(4, socket.MSG_WAITALL)
    mine = private[7 * 4096 : 7 * 4096 + 8] + private[9 * 4096 : 9 * 4096 + 8]
    # Its stdout is the parent's open file: one offset, so the parent's
    # verdict lands after this line, not over it.
    print("child after the move", flush=True)
    os.kill(grandchild, signal.SIGKILL)
    os.waitpid(grandchild, 0)
    os.write(w, b" after ppid=%d %s %s %s" % (os.getppid(), queued, pong, mine))
    os._exit(7)
zombie = os.fork()
if zombie == 0:
    os._exit(5)
killed = os.fork()
if killed == 0:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    os._exit(0)
os.close(w)
s2.close()
s1.send(b"queued")
got = os.read(r, 100)
grandchild = int(got.split()[1])
time.sleep(0.3)
print("ready", os.getpid(), child, grandchild, zombie, killed, base, flush=True)
while not go:
    time.sleep(0.01)
problems = []
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
want = b" after ppid=%d queued pong child!!!page0009" % os.getpid()
if got != want:
    problems.append(f"then {got!r}")
if shared[:6] != b"child!":
    problems.append(f"the shared page holds {shared[:6]!r}")
if private[7 * 4096 : 7 * 4096 + 8] != b"page0007":
    problems.append("the parent sees the child's private write")
bad = [i for i in range(PAGES) if private[i * 4096 : i * 4096 + 8] != b"page%04d" % i]
if bad:
    problems.append(f"{len(bad)} private pages changed in the parent")
for pid, want in ((child, ("exit", 7)), (zombie, ("exit", 5)), (killed, ("signal", 15))):
    reaped, status = os.waitpid(pid, 0)
    how = ("exit", os.WEXITSTATUS(status)) if os.WIFEXITED(status) else ("signal", os.WTERMSIG(status))
    if (reaped, how) != (pid, want):
        problems.append(f"waitpid({pid}) gave {reaped} {how}")
print("verdict", "ok" if not problems else "FAIL: " + "; ".join(problems), flush=True)
time.sleep(60)
