import errno, os, socket, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
# Connected Unix sockets whose peer is gone, each with data left by the
# peer before it closed: a stream (reads its bytes, then end-of-file;
# writes fail with EPIPE) and a datagram pair (reads its datagrams; a send
# is refused).
s, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
peer.sendall(b"last words")
peer.close()
d, dpeer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
dpeer.send(b"one")
dpeer.send(b"two")
dpeer.close()
ready()
problems = []
s.settimeout(2)
got = b""
while True:
    b = s.recv(64)
    if not b:
        break
    got += b
if got != b"last words":
    problems.append(f"stream read {got!r}")
try:
    s.send(b"x")
    problems.append("stream write went through")
except BrokenPipeError:
    pass
except OSError as e:
    problems.append(f"stream write: {e}")
d.settimeout(2)
for want in (b"one", b"two"):
    g = d.recv(16)
    if g != want:
        problems.append(f"datagram {g!r} for {want!r}")
try:
    d.send(b"x")
    problems.append("datagram send went through")
except ConnectionRefusedError:
    pass
except OSError as e:
    problems.append(f"datagram send: {e}")
verdict(problems)
