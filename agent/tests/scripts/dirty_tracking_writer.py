import ctypes, mmap, os, sys
os.closerange(3, 4096)
m = mmap.mmap(-1, 64 * 4096, flags=mmap.MAP_PRIVATE)
for k in range(64):
    m[k * 4096] = 1
base = ctypes.addressof(ctypes.c_char.from_buffer(m))
print("base", base, flush=True)
extra = []
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "w":
        k = int(cmd[1])
        m[k * 4096 + 7] = (m[k * 4096 + 7] + 1) % 256
        print("ok", flush=True)
    elif cmd[0] == "m":
        e = mmap.mmap(-1, 8 * 4096, flags=mmap.MAP_PRIVATE)
        for k in range(8):
            e[k * 4096] = 2
        extra.append(e)
        print("new", ctypes.addressof(ctypes.c_char.from_buffer(e)), flush=True)
