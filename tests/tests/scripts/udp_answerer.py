# Answers every datagram on PORT with the same bytes, to its sender.
import os, socket, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", port))
print("pid", os.getpid(), flush=True)
while True:
    b, peer = s.recvfrom(64)
    s.sendto(b, peer)
