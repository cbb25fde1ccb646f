# A family for `migrate check`: two children in a process group of their
# own joined by a pipe, a shared anonymous page they all map, a zombie,
# and a child reading a FIFO whose writer is outside the family.
import mmap, os, sys, time

os.closerange(3, 4096)
fifo = sys.argv[1]
shared = mmap.mmap(-1, 4096, flags=mmap.MAP_SHARED)
shared[:5] = b"hello"
r, w = os.pipe()


def fork(body):
    pid = os.fork()
    if pid == 0:
        try:
            body()
        finally:
            os._exit(0)
    return pid


def writer():
    os.close(r)
    for _ in range(600):
        os.write(w, b"x")
        time.sleep(1)


def reader():
    os.close(w)
    for _ in range(600):
        os.read(r, 1)


def fifo_reader():
    os.close(r)
    os.close(w)
    f = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    time.sleep(600)


a = fork(writer)
os.setpgid(a, a)
b = fork(reader)
os.setpgid(b, a)
zombie = fork(lambda: None)
d = fork(fifo_reader)
os.close(r)
os.close(w)
time.sleep(0.5)
print("pid", os.getpid(), flush=True)
print("family", os.getpid(), a, b, zombie, d, flush=True)
time.sleep(600)
