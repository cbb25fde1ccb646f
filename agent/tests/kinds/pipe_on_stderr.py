import os, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
r, w = os.pipe()
# Its own pipe, the write end on a standard stream: not a stream to
# forward, a pipe that moves with both ends.
os.dup2(w, 2)
os.close(w)
w = 2
os.write(w, b"in flight")
ready()
got = os.read(r, 100)
os.write(w, b"after")
again = os.read(r, 100)
verdict([] if (got, again) == (b"in flight", b"after") else [f"read {got!r} then {again!r}"])
