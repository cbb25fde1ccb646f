import os, socket, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(4)
port = s.getsockname()[1]
ready()
problems = []
if s.getsockname()[1] != port:
    problems.append("another port")
if not s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR):
    problems.append("SO_REUSEADDR lost")
c = socket.create_connection(("127.0.0.1", port), timeout=2)
c.send(b"hello")
conn, _ = s.accept()
if conn.recv(10) != b"hello":
    problems.append("nothing came through")
verdict(problems)
