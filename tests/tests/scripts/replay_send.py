# Replays a recording of replay_relay.py to TARGET:PORT: each connection
# opened at its recorded time, everything its client sent written at once,
# whatever comes back read and dropped, for at most HOLD seconds. Prints
# "replayed <connections>".
import os, socket, sys, threading, time
target, tport, rec, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
conns = sorted(int(f) for f in os.listdir(rec) if f.isdigit())
t0 = time.time()

def one(n):
    at = float(open(os.path.join(rec, f"{n}.t")).read())
    time.sleep(max(0.0, t0 + at - time.time()))
    try:
        s = socket.create_connection((target, tport), timeout=hold)
        s.sendall(open(os.path.join(rec, str(n)), "rb").read())
        end = time.time() + hold
        while time.time() < end and s.recv(65536):
            pass
    except OSError:
        pass

ts = [threading.Thread(target=one, args=(n,)) for n in conns]
for t in ts:
    t.start()
for t in ts:
    t.join()
print("replayed", len(conns), flush=True)
