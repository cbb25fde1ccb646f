# A plain echo server: one client at a time on ADDR:PORT, every byte sent
# back as it comes; prints its pid, then how many bytes it echoed.
import os, socket, sys
os.closerange(3, 4096)
sys.stderr = sys.stdout
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(4)
print("pid", os.getpid(), flush=True)
while True:
    c, peer = s.accept()
    print("client", peer[0], flush=True)
    n = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        c.sendall(b)
        n += len(b)
    print("echoed", n, flush=True)
    c.close()
