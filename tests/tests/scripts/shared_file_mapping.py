# Maps a file of its own in /tmp (each host's is private) shared and
# writable, twice, 1 MiB of a known pattern, and closes the descriptor.
# Prints `pid`, ticks, and on SIGUSR1 checks: the content (the pattern,
# with the counter it keeps writing through the first mapping at word 0),
# a write through one mapping seen through the other, and whether a file
# at its path holds the same bytes; prints `check ok <path-state>` or
# `check FAIL <why>`.
import mmap, os, signal, struct, time
os.closerange(3, 4096)
path = f"/tmp/mapped-{os.getpid()}"
size = 1 << 20
pattern = bytes((i * 7 + 3) % 251 for i in range(size))
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, pattern)
a = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
b = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
os.close(fd)
go = []
signal.signal(signal.SIGUSR1, lambda *x: go.append(1))
print("pid", os.getpid(), flush=True)
n = 0
while True:
    n += 1
    a[0:8] = struct.pack("<Q", n)
    print("tick", n, time.time_ns(), flush=True)
    if go:
        go.clear()
        why = []
        if struct.unpack("<Q", b[0:8])[0] != n:
            why.append("counter not shared between the mappings")
        if b[8:] != pattern[8:]:
            why.append("content differs")
        a[100:104] = b"abcd"
        if b[100:104] != b"abcd":
            why.append("a write not seen through the other mapping")
        a[100:104] = pattern[100:104]
        try:
            with open(path, "rb") as f:
                on_disk = f.read()
            state = "same-at-path" if on_disk[8:] == b[8:] and on_disk[:8] == b[:8] else "other-at-path"
        except FileNotFoundError:
            state = "none-at-path"
        print("check", "ok " + state if not why else "FAIL " + "; ".join(why), flush=True)
    time.sleep(0.01)
