import mmap, os, time
os.closerange(3, 4096)
m = mmap.mmap(-1, 1 << 20)
# The memory's other user is outside this process's tree: a grandchild
# whose parent ended (it belongs to the host's init now).
if os.fork() == 0:
    if os.fork() == 0:
        time.sleep(600)
        os._exit(0)
    os._exit(0)
os.wait()
print("pid", os.getpid(), flush=True)
while True:
    print("tick", flush=True)
    time.sleep(0.01)
