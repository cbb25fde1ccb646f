import fcntl, hashlib, mmap, os, signal, time
os.closerange(3, 4096)
a = os.memfd_create("mgw-plain", os.MFD_ALLOW_SEALING)
os.write(a, b"".join(i.to_bytes(4, "little") for i in range(300000)))
fcntl.fcntl(a, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK)
os.lseek(a, 12345, os.SEEK_SET)
b = os.memfd_create("mgw-mapped")
os.ftruncate(b, 1 << 20)
m = mmap.mmap(b, 1 << 20)          # keeps its own dup of b
m[0:11] = b"via mapping"
os.pwrite(b, b"via fd", 4096)
def state():
    out = []
    for fd in (a, b):
        data = os.pread(fd, 2 << 20, 0)
        out.append("%s %s seals=%d pos=%d" % (os.readlink("/proc/self/fd/%d" % fd), hashlib.sha256(data).hexdigest()[:12],
                   fcntl.fcntl(fd, fcntl.F_GET_SEALS), os.lseek(fd, 0, os.SEEK_CUR)))
    out.append("shared=%s" % (bytes(m[4096:4102]) == b"via fd" and os.pread(b, 11, 0) == b"via mapping"))
    return " | ".join(out)
go = []
signal.signal(signal.SIGUSR1, lambda *x: go.append(1))
print("pid", os.getpid(), flush=True)
print("state", state(), flush=True)
while True:
    time.sleep(0.01)
    if go:
        go.clear()
        m[100:104] = b"more"
        print("state", state(), flush=True)
        print("write-through", os.pread(b, 4, 100) == b"more", flush=True)
