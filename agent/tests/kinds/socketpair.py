import os, socket, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
a.send(b"one")
a.send(b"two")
ready()
got = [b.recv(100), b.recv(100)]
b.send(b"back")
back = a.recv(100)
verdict([] if (got, back) == ([b"one", b"two"], b"back") else [f"read {got} and {back!r}"])
