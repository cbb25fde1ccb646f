import ctypes, os, struct, sys, time
pid, tid = int(sys.argv[1]), int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
for value in (0x12301, 0x12302):
    info = struct.pack("iii4xiIQ", 62, 0, -1, os.getpid(), 0, value).ljust(128, b"\0")
    buf = ctypes.create_string_buffer(info, 128)
    if libc.syscall(297, pid, tid, 62, buf) != 0:
        sys.exit("rt_tgsigqueueinfo: errno %d" % ctypes.get_errno())
    time.sleep(0.2)
