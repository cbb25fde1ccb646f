import ctypes, mmap, os, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
n = 12 * 4096
base = libc.mmap(None, n, 3, 0x22, -1, 0)   # rw, MAP_PRIVATE | MAP_ANONYMOUS
ctypes.memset(base, 0x5a, n)
assert libc.mprotect(ctypes.c_void_p(base + 4096 * 4), 4096 * 4, 0) == 0      # a PROT_NONE hole
assert libc.mprotect(ctypes.c_void_p(base + 4096 * 8), 4096 * 4, 1) == 0      # read-only


def perms():
    out = {}
    with open("/proc/self/maps") as f:
        for l in f:
            r, p = l.split()[:2]
            a, b = (int(x, 16) for x in r.split("-"))
            if base <= a < base + n:
                out[a - base] = (b - a, p[:3])
    return out


before = perms()
ready()
problems = []
if perms() != before:
    problems.append(f"protections {perms()} were {before}")
if ctypes.string_at(base, 4096) != b"\x5a" * 4096 or ctypes.string_at(base + 8 * 4096, 4096) != b"\x5a" * 4096:
    problems.append("content differs")
verdict(problems)
