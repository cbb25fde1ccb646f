import mmap, os, time
os.closerange(3, 4096)
m = mmap.mmap(-1, 1 << 20)
if os.fork() == 0:
    time.sleep(600)
    os._exit(0)
print("pid", os.getpid(), flush=True)
while True:
    print("tick", flush=True)
    time.sleep(0.01)
