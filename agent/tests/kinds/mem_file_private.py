import mmap, os, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
path = os.path.join(sys.argv[1], "mapped")
with open(path, "wb") as f:
    f.write(b"d" * (4 * 4096))
f = open(path, "rb")
m = mmap.mmap(f.fileno(), 4 * 4096, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
f.close()
m[4096:4101] = b"cowed"                   # a private copy of one page
ready()
problems = []
if m[4096:4101] != b"cowed":
    problems.append("the written page lost its content")
if m[0:5] != b"ddddd" or m[8192:8197] != b"ddddd":
    problems.append("unwritten pages differ from the file")
with open(path, "rb") as g:
    if g.read()[4096:4101] != b"ddddd":
        problems.append("the file itself changed")
verdict(problems)
