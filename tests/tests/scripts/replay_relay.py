# A TCP relay that records: listens on LISTEN_PORT (loopback), forwards
# each connection to TARGET:PORT both ways, and writes what each client
# sent to DIR/<n> (connections numbered in arrival order) and its arrival
# time (seconds after the first) to DIR/<n>.t. Prints "listening".
import os, socket, sys, threading, time
port, target, tport, rec = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
os.makedirs(rec, exist_ok=True)
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port))
l.listen(64)
print("listening", flush=True)
t0 = None
n = 0

def pump(src, dst, log):
    while True:
        try:
            b = src.recv(65536)
        except OSError:
            b = b""
        if not b:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            return
        if log:
            log.write(b)
            log.flush()
        try:
            dst.sendall(b)
        except OSError:
            return

while True:
    c, _ = l.accept()
    now = time.time()
    t0 = t0 or now
    u = socket.create_connection((target, tport))
    with open(os.path.join(rec, f"{n}.t"), "w") as f:
        f.write(f"{now - t0}\n")
    log = open(os.path.join(rec, str(n)), "wb")
    threading.Thread(target=pump, args=(c, u, log), daemon=True).start()
    threading.Thread(target=pump, args=(u, c, None), daemon=True).start()
    n += 1
