# A parent, a child in a process group of its own writing to the parent
# through a pipe, and a zombie. After the move (SIGUSR1) the parent reads
# what the child wrote before and after, reaps both children with their
# exit codes, and prints its verdict.
import os, signal, time

os.closerange(3, 4096)
go = []
signal.signal(signal.SIGUSR1, lambda *a: go.append(1))
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.close(r)
    os.setpgid(0, 0)
    os.write(w, b"before")
    while not go:
        time.sleep(0.01)
    os.write(w, b" after ppid=%d" % os.getppid())
    os._exit(7)
zombie = os.fork()
if zombie == 0:
    os._exit(5)
os.close(w)
time.sleep(0.3)
print("ready", os.getpid(), child, zombie, flush=True)
while not go:
    time.sleep(0.01)
problems = []
got = os.read(r, 100)
if got != b"before":
    problems.append(f"read {got!r} first")
if os.getpgid(child) != child:
    problems.append(f"child in group {os.getpgid(child)}")
os.kill(child, signal.SIGUSR1)
got = b""
while True:
    chunk = os.read(r, 100)
    if not chunk:
        break
    got += chunk
if got != b" after ppid=%d" % os.getpid():
    problems.append(f"then {got!r}")
for pid, code in ((child, 7), (zombie, 5)):
    reaped, status = os.waitpid(pid, 0)
    if (reaped, os.WEXITSTATUS(status)) != (pid, code):
        problems.append(f"waitpid({pid}) gave {reaped} status {status:#x}")
print("verdict", "ok" if not problems else "FAIL: " + "; ".join(problems), flush=True)
time.sleep(60)
