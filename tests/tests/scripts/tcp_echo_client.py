# Talks to the echo server at ADDR:PORT: COUNT numbered lines, one every
# DELAY seconds, each checked byte for byte as it comes back. Prints
# progress, then "done N ok" or what went wrong (an error, a reset, a
# lost, repeated or changed byte).
import socket, sys, time
import os
addr, port, count, delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
print("pid", os.getpid(), flush=True)
s = socket.create_connection((addr, port), timeout=30)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print("connected", flush=True)
sent = bytearray()
got = bytearray()
try:
    for i in range(count):
        line = b"line %08d %s\n" % (i, b"x" * (i % 97))
        s.sendall(line)
        sent += line
        s.settimeout(30)
        while len(got) < len(sent):
            b = s.recv(65536)
            if not b:
                print("closed by the server after", len(got), "bytes", flush=True)
                sys.exit(1)
            got += b
        if got != sent:
            print("bad bytes at", next(i for i in range(len(got)) if got[i] != sent[i]), flush=True)
            sys.exit(1)
        if i % 100 == 0:
            print("echoed", i, flush=True)
        time.sleep(delay)
except OSError as e:
    print("error", repr(e), "after", len(got), "bytes", flush=True)
    sys.exit(1)
s.close()
print("done", count, "ok", flush=True)
