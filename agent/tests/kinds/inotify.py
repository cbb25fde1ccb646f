import ctypes, os, struct, sys, time
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
watched = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_NONBLOCK)
first = libc.inotify_add_watch(fd, b"/usr", 0x100)
gone = libc.inotify_add_watch(fd, b"/etc", 0x100)
libc.inotify_rm_watch(fd, gone)
time.sleep(0.05)
os.read(fd, 4096)                                   # its IN_IGNORED
wd = libc.inotify_add_watch(fd, os.fsencode(watched), 0x100)   # IN_CREATE
ready()
open(os.path.join(watched, "made-after"), "w").close()
time.sleep(0.1)
buf = os.read(fd, 4096)
got, mask, _, ln = struct.unpack_from("iIII", buf)
name = buf[16:16 + ln].rstrip(b"\0").decode()
problems = []
if (got, name) != (wd, "made-after"):
    problems.append(f"event {got} {name!r}, expected {wd} 'made-after'")
verdict(problems)
