import mmap, os, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
n = 16 * 4096
m = mmap.mmap(-1, n)                      # MAP_SHARED | MAP_ANONYMOUS
m[:] = b"s" * n
m[100:105] = b"hello"
ready()
problems = []
if m[100:105] != b"hello" or m[:100] != b"s" * 100:
    problems.append("shared anonymous memory differs")
with open("/proc/self/maps") as f:
    if not any(" rw-s " in l and "/dev/zero" in l for l in f):
        problems.append("no shared anonymous mapping any more")
verdict(problems)
