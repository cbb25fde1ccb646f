# A family whose memory is still arriving when it forks and ends: the
# parent forks A (32 MiB of its own), then fills 64 MiB of its own and
# says "pid <parent> <A>". On SIGUSR1 (sent to both once they moved, with
# most of their pages still to come) A checks its memory and exits 0 or 1;
# the parent reaps A, forks B, which checks the parent's memory (pages
# its parent had not got yet) and exits 0 or 1, reaps B and prints
# "verdict ok" or "verdict bad: WHY".
import os
import signal
import time

os.closerange(3, 4096)
MIB = 1 << 20
pattern = bytes(range(256)) * (MIB // 256)
asked = False


def on_usr1(*_):
    global asked
    asked = True


signal.signal(signal.SIGUSR1, on_usr1)


def wait_asked():
    while not asked:
        time.sleep(0.01)


a = os.fork()
if a == 0:
    mine = bytearray(pattern[::-1] * 32)
    wait_asked()
    os._exit(0 if mine == pattern[::-1] * 32 else 1)
root_mem = bytearray(pattern * 64)
os.write(1, f"pid {os.getpid()} {a}\n".encode())
wait_asked()
why = None
_, status = os.waitpid(a, 0)
if os.waitstatus_to_exitcode(status) != 0:
    why = f"A's memory differs ({status})"
b = os.fork()
if b == 0:
    os._exit(0 if root_mem == pattern * 64 else 1)
_, status = os.waitpid(b, 0)
if why is None and os.waitstatus_to_exitcode(status) != 0:
    why = f"the parent's memory, seen by a child forked after the move, differs ({status})"
if why is None and root_mem != pattern * 64:
    why = "the parent's memory differs"
os.write(1, ("verdict ok\n" if why is None else f"verdict bad: {why}\n").encode())
