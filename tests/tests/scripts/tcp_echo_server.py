# A plain echo server on ADDR:PORT, every byte sent back as it comes;
# prints its pid, then how many bytes it echoed. One client at a time, or
# with "fork" a child process of its own for each client (the parent
# keeps its copy of the connection open: the child inherits it).
import os, socket, sys
os.closerange(3, 4096)
sys.stderr = sys.stdout
addr, port = sys.argv[1], int(sys.argv[2])
forking = sys.argv[3:] == ["fork"]
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(4)
print("pid", os.getpid(), flush=True)


def echo(c):
    n = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        c.sendall(b)
        n += len(b)
    print("echoed", n, flush=True)
    c.close()


held = []
while True:
    c, peer = s.accept()
    print("client", peer[0], flush=True)
    if not forking:
        echo(c)
        continue
    child = os.fork()
    if child == 0:
        s.close()
        print("child", os.getpid(), flush=True)
        echo(c)
        os._exit(0)
    held.append(c)
