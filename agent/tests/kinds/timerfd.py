import ctypes, os, struct, sys, time
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.timerfd_create(1, os.O_NONBLOCK)          # CLOCK_MONOTONIC
spec = struct.pack("qqqq", 0, 50_000_000, 0, 50_000_000)
assert libc.timerfd_settime(fd, 0, spec, None) == 0
ready()
time.sleep(0.3)
n = struct.unpack("Q", os.read(fd, 8))[0]
verdict([] if n >= 1 else [f"{n} expirations"])
