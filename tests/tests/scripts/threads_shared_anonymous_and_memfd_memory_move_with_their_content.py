import ctypes, hashlib, mmap, os, signal, time
os.closerange(3, 4096)
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
anon = mmap.mmap(-1, 8 << 20)                      # MAP_SHARED | MAP_ANONYMOUS
fd = os.memfd_create("mgw-data")
os.ftruncate(fd, 16 << 20)
# Mapped with libc (python's mmap would keep a descriptor), then closed.
base = libc.mmap(None, 16 << 20, 3, 1, fd, 0)
os.close(fd)
mfd = (ctypes.c_char * (16 << 20)).from_address(base)
for i in range(0, 8 << 20, 4096 * 3):               # holes stay holes
    anon[i:i + 8] = i.to_bytes(8, "little")
for i in range(0, 16 << 20, 4096 * 5):
    mfd[i:i + 8] = (i * 7).to_bytes(8, "little")
def digest():
    return hashlib.sha256(anon[:]).hexdigest()[:16] + "-" + hashlib.sha256(bytes(mfd)).hexdigest()[:16]
go = []
signal.signal(signal.SIGUSR1, lambda *a: go.append(1))
print("pid", os.getpid(), flush=True)
print("digest", digest(), flush=True)
while True:
    time.sleep(0.01)
    if go:
        go.clear()
        print("digest", digest(), flush=True)
