import os, socket
os.closerange(3, 4096)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9000))
print("pid", os.getpid(), flush=True)
while True:
    d, a = s.recvfrom(100)
    s.sendto(b"echo:" + d, a)
