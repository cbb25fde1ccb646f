import fcntl, os, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
fd = os.memfd_create("kind", os.MFD_ALLOW_SEALING)
data = bytes(range(256)) * 64
os.write(fd, data)
os.lseek(fd, 100, os.SEEK_SET)
seals = fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK
fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
ready()
problems = []
if os.lseek(fd, 0, os.SEEK_CUR) != 100:
    problems.append("offset lost")
if os.pread(fd, len(data), 0) != data:
    problems.append("content differs")
if fcntl.fcntl(fd, fcntl.F_GET_SEALS) != seals:
    problems.append("seals differ")
verdict(problems)
