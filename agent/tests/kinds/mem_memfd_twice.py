import mmap, os, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
fd = os.memfd_create("twice")
os.ftruncate(fd, 8 * 4096)
a = mmap.mmap(fd, 8 * 4096)
b = mmap.mmap(fd, 8 * 4096)
os.close(fd)                              # reached through its mappings only
a[0:5] = b"first"
ready()
problems = []
if b[0:5] != b"first":
    problems.append("content lost")
a[10:15] = b"later"
if b[10:15] != b"later":
    problems.append("the two mappings no longer share one object")
verdict(problems)
