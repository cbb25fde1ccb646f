"""Leaves signals pending with their siginfo, to be collected after a
migration: SIGRTMIN queued twice with values (sigqueue), SIGUSR1 from
kill() to the process, SIGUSR1 aimed at one thread (pthread_kill). After
SIGUSR2 it collects them with sigwaitinfo and prints each as
`got <who> <signo> code=<si_code> pid=<si_pid> value=<si_value>`, then
`done`."""
import ctypes
import os
import signal
import threading
import time

os.closerange(3, 4096)
libc = ctypes.CDLL(None, use_errno=True)
RT = int(signal.SIGRTMIN)
USR1 = int(signal.SIGUSR1)


class Sigval(ctypes.Union):
    _fields_ = [("i", ctypes.c_int), ("p", ctypes.c_void_p)]


def waitinfo(signos):
    s = (ctypes.c_ulong * 16)()
    libc.sigemptyset(s)
    for n in signos:
        libc.sigaddset(s, n)
    info = (ctypes.c_ubyte * 128)()
    assert libc.sigwaitinfo(s, info) > 0
    b = bytes(info)
    i = lambda off: int.from_bytes(b[off:off + 4], "little", signed=True)
    return i(0), i(8), i(16), i(24)


go = threading.Event()
signal.signal(signal.SIGUSR2, lambda *a: go.set())
signal.pthread_sigmask(signal.SIG_BLOCK, [RT, USR1])
lines = []


def waiter():
    go.wait()
    signo, code, pid, value = waitinfo([USR1])
    lines.append(f"got thread {signo} code={code} pid={pid}")


t = threading.Thread(target=waiter)
t.start()  # inherits the blocked mask
me = os.getpid()
assert libc.sigqueue(me, RT, Sigval(i=4242)) == 0
assert libc.sigqueue(me, RT, Sigval(i=4343)) == 0
signal.pthread_kill(t.ident, USR1)
os.kill(me, USR1)
print("pid", me, flush=True)
print("ready", flush=True)
while not go.is_set():
    time.sleep(0.01)
t.join()
for _ in range(2):
    signo, code, pid, value = waitinfo([RT])
    lines.append(f"got process {signo} code={code} pid={pid} value={value}")
signo, code, pid, value = waitinfo([USR1])
lines.append(f"got process {signo} code={code} pid={pid}")
for l in lines:
    print(l, flush=True)
print("done", flush=True)
time.sleep(600)
