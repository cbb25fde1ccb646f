import os, signal, struct, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.signalfd(-1, struct.pack("Q", 1 << (signal.SIGUSR2 - 1)), os.O_NONBLOCK)
ready()
os.kill(os.getpid(), signal.SIGUSR2)
info = os.read(fd, 128)
signo = struct.unpack_from("I", info)[0]
blocked = signal.SIGUSR2 in signal.pthread_sigmask(signal.SIG_BLOCK, set())
problems = []
if signo != signal.SIGUSR2:
    problems.append(f"read signal {signo}")
if not blocked:
    problems.append("SIGUSR2 no longer blocked")
verdict(problems)
