import os, socket, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
# Never bound: a UDP socket with SO_BROADCAST, non-blocking; a TCP socket
# with SO_KEEPALIVE; an IPv6 UDP socket.
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
u.setblocking(False)
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
ready()
problems = []
for name, s, family, kind in [
    ("udp", u, socket.AF_INET, socket.SOCK_DGRAM),
    ("tcp", t, socket.AF_INET, socket.SOCK_STREAM),
    ("udp6", u6, socket.AF_INET6, socket.SOCK_DGRAM),
]:
    if s.family != family or s.type != kind:
        problems.append(f"{name}: {s.family} {s.type}")
    if s.getsockname()[1] != 0:
        problems.append(f"{name}: bound to {s.getsockname()} by the move")
if not u.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST):
    problems.append("SO_BROADCAST lost")
if u.getblocking():
    problems.append("udp blocking again")
if not t.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE):
    problems.append("SO_KEEPALIVE lost")
# Used for the first time after the move: each gets its port then.
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.bind(("127.0.0.1", 0))
r.settimeout(2)
u.sendto(b"ping", r.getsockname())
data, frm = r.recvfrom(16)
if data != b"ping" or frm[1] != u.getsockname()[1] or frm[1] == 0:
    problems.append(f"udp: got {data!r} from {frm}, sent from {u.getsockname()}")
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(1)
t.settimeout(2)
t.connect(l.getsockname())
t.sendall(b"hello")
c, _ = l.accept()
c.settimeout(2)
if c.recv(16) != b"hello":
    problems.append("tcp: nothing came through")
verdict(problems)
