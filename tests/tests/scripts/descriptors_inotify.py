import ctypes, os, signal, struct, time, sys
# The directory to watch (its events are checked after the move).
watched = sys.argv[1]
os.closerange(3, 4096)
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_NONBLOCK)
w1 = libc.inotify_add_watch(fd, b"/usr", 0x100)
gone = libc.inotify_add_watch(fd, b"/etc", 0x100)
libc.inotify_rm_watch(fd, gone)
time.sleep(0.1)
os.read(fd, 4096)                                   # its IN_IGNORED
w3 = libc.inotify_add_watch(fd, os.fsencode(watched), 0x100)    # IN_CREATE
go = []
signal.signal(signal.SIGUSR1, lambda *x: go.append(1))
print("pid", os.getpid(), "wds", w1, w3, flush=True)
while not go:
    time.sleep(0.01)
time.sleep(0.3)
buf = b""
try:
    buf = os.read(fd, 4096)
except BlockingIOError:
    pass
events = []
off = 0
while off + 16 <= len(buf):
    wd, mask, cookie, ln = struct.unpack_from("iIII", buf, off)
    name = buf[off + 16:off + 16 + ln].rstrip(b"\0").decode()
    events.append("%d:%x:%s" % (wd, mask, name))
    off += 16 + ln
print("events", " ".join(events), flush=True)
time.sleep(600)
