import os, socket, time, sys
# Where the listener binds.
path = sys.argv[1]
os.closerange(3, 4096)
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(7)
cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
cli.connect(path)
mine, _ = srv.accept()
cli.sendall(b"queued before the move")
srv.settimeout(0.05)
print("pid", os.getpid(), flush=True)
served = 0
while True:
    try:
        conn, _ = srv.accept()
    except socket.timeout:
        continue
    conn.sendall(b"echo:" + conn.recv(100))
    conn.close()
    served += 1
    if served == 1:
        print("inner", mine.recv(100).decode(), flush=True)
