# A UDP socket bound to ADDR:PORT and connected to PEER:PEER_PORT: sends a
# numbered datagram every 20 ms and prints each answer ("got N") or a
# miss ("miss N"), forever.
import os, socket, sys
os.closerange(3, 4096)
sys.stderr = sys.stdout
addr, port, peer, peer_port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, port))
s.connect((peer, peer_port))
s.settimeout(0.5)
print("pid", os.getpid(), flush=True)
n = 0
while True:
    n += 1
    try:
        s.send(b"%d" % n)
    except OSError as e:
        print("senderr", n, repr(e), flush=True)
        __import__("time").sleep(0.02)
        continue
    try:
        while True:
            got = int(s.recv(64))
            if got == n:
                print("got", n, flush=True)
                break
    except socket.timeout:
        print("miss", n, flush=True)
    except OSError as e:
        print("error", repr(e), flush=True)
        break
    __import__("time").sleep(0.02)
