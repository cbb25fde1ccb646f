import os, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
r, w = os.pipe()
os.write(w, b"in flight")
ready()
got = os.read(r, 100)
os.write(w, b"after")
again = os.read(r, 100)
verdict([] if (got, again) == (b"in flight", b"after") else [f"read {got!r} then {again!r}"])
