# A process in one of the states README's Limitations refuses, named by
# argv[1]; prints `pid N`, then a line every 10 ms while it runs.
import ctypes, os, select, socket, sys, time
os.closerange(3, 4096)
libc = ctypes.CDLL(None, use_errno=True)
case = sys.argv[1]
keep = []
if case == "terminal":
    # A pseudo-terminal on descriptors above 2.
    keep += os.openpty()
elif case == "accept-queue":
    # A listener with a connection waiting to be accepted (its client, a
    # child, connected and ended; the child reaped).
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen(4)
    child = os.fork()
    if child == 0:
        c = socket.create_connection(l.getsockname())
        os._exit(0)
    os.waitpid(child, 0)
    keep.append(l)
elif case == "unix-peer":
    # A Unix socket connected to another process (not its descendant: a
    # grandchild whose parent ended).
    path = sys.argv[2]
    r, w = os.pipe()
    if os.fork() == 0:
        if os.fork() == 0:
            s = socket.socket(socket.AF_UNIX)
            s.bind(path)
            s.listen(1)
            os.write(w, b"x")
            conn, _ = s.accept()
            time.sleep(600)
        os._exit(0)
    os.read(r, 1)
    os.close(r)
    os.close(w)
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)
    keep.append(c)
elif case == "inotify-unread":
    # An inotify instance with an event not read yet.
    fd = libc.inotify_init1(0)
    assert fd >= 0
    d = sys.argv[2]
    assert libc.inotify_add_watch(fd, d.encode(), 0x100) >= 0  # IN_CREATE
    open(os.path.join(d, "new"), "w").close()
    assert select.select([fd], [], [], 5)[0]
    keep.append(fd)
elif case == "sysv-shm":
    # A SysV shared memory segment attached.
    libc.shmat.restype = ctypes.c_void_p
    shm = libc.shmget(0, 1 << 20, 0o600 | 0o1000)  # IPC_PRIVATE, IPC_CREAT
    assert shm >= 0, ctypes.get_errno()
    at = libc.shmat(shm, None, 0)
    assert at != ctypes.c_void_p(-1).value
    ctypes.memset(at, 7, 1 << 20)
    libc.shmctl(shm, 0, None)  # IPC_RMID: gone once detached
elif case == "userfaultfd":
    # A userfaultfd of its own (the process serves its own faults).
    fd = libc.syscall(323, os.O_CLOEXEC)
    assert fd >= 0, ctypes.get_errno()
    keep.append(fd)
else:
    sys.exit(f"no case {case}")
print("pid", os.getpid(), flush=True)
while True:
    print("tick", flush=True)
    time.sleep(0.01)
