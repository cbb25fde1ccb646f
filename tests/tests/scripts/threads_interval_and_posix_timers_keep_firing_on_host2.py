import ctypes, os, signal, time
os.closerange(3, 4096)
n = {"alrm": 0, "usr2": 0}
def on(sig, _):
    n["alrm" if sig == signal.SIGALRM else "usr2"] += 1
signal.signal(signal.SIGALRM, on)
signal.signal(signal.SIGUSR2, on)
signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
libc = ctypes.CDLL(None, use_errno=True)
class Sigevent(ctypes.Structure):
    _fields_ = [("value", ctypes.c_void_p), ("signo", ctypes.c_int), ("notify", ctypes.c_int), ("pad", ctypes.c_byte * 48)]
class Its(ctypes.Structure):
    _fields_ = [("isec", ctypes.c_long), ("insec", ctypes.c_long), ("vsec", ctypes.c_long), ("vnsec", ctypes.c_long)]
# A couple of unused timers first, so the one that fires has id 2.
ids = []
for _ in range(3):
    ev = Sigevent(None, int(signal.SIGUSR2), 0)
    tid = ctypes.c_int()
    assert libc.timer_create(1, ctypes.byref(ev), ctypes.byref(tid)) == 0
    ids.append(tid.value)
assert libc.timer_settime(ids[2], 0, ctypes.byref(Its(0, 25_000_000, 0, 25_000_000)), None) == 0
print("pid", os.getpid(), "timer", ids[2], flush=True)
while True:
    time.sleep(0.05)
    print("counts", n["alrm"], n["usr2"], flush=True)
