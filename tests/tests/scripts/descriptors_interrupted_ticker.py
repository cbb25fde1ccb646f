import os, sys, time
os.closerange(3, 65536)
print("pid", os.getpid(), flush=True)
try:
    for i in range(1, 3001):
        print("tick", i, flush=True)
        time.sleep(0.01)
except KeyboardInterrupt:
    print("interrupted on", os.uname().nodename, flush=True)
    sys.exit(42)
