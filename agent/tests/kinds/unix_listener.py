import os, socket, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
path = os.path.join(sys.argv[1], "listener.sock")
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(4)
ready()
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect(path)
c.send(b"hello")
conn, _ = s.accept()
verdict([] if conn.recv(10) == b"hello" else ["nothing came through"])
