import hashlib, os, signal, time
os.closerange(3, 4096)
os.makedirs("/tmp/wd", exist_ok=True)
notes = open("/tmp/wd/notes.txt", "w+")           # only in host1's private /tmp
notes.write("line %d\n" * 1 % 1 + "".join("line %d\n" % i for i in range(2, 5000)))
notes.flush()
notes.seek(100)
gone = open("/tmp/gone.bin", "w+b")
gone.write(bytes(range(256)) * 12000)                # 3 chunks on the wire
gone.flush()
os.unlink("/tmp/gone.bin")                          # deleted but open
gone.seek(777)
go = []
signal.signal(signal.SIGUSR1, lambda *x: go.append(1))
def state():
    a = os.pread(notes.fileno(), 16 << 20, 0)
    b = os.pread(gone.fileno(), 16 << 20, 0)
    return "notes %s pos=%d | gone %s pos=%d %s" % (hashlib.sha256(a).hexdigest()[:12], notes.tell(),
            hashlib.sha256(b).hexdigest()[:12], gone.tell(), os.readlink("/proc/self/fd/%d" % gone.fileno()).endswith("(deleted)"))
print("pid", os.getpid(), flush=True)
print("state", state(), flush=True)
while True:
    time.sleep(0.01)
    if go:
        go.clear()
        notes.write("appended on the new host\n")
        notes.flush()
        print("state", state(), flush=True)
