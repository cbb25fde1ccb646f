import mmap, os, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
n = 64 * 4096
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
pattern = bytes((i * 7) % 251 for i in range(n))
m[:] = pattern
ready()
verdict([] if m[:] == pattern else ["private anonymous memory differs"])
