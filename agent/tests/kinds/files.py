import os, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
path = os.path.join(sys.argv[1], "file")
with open(path, "wb") as f:
    f.write(b"0123456789")
fd = os.open(path, os.O_RDWR)
os.lseek(fd, 4, os.SEEK_SET)
twin = os.dup(fd)                                    # one open file, one offset
d = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
null = os.open("/dev/null", os.O_WRONLY)
ready()
problems = []
if os.lseek(twin, 0, os.SEEK_CUR) != 4:
    problems.append("offset lost")
os.read(fd, 2)
if os.lseek(twin, 0, os.SEEK_CUR) != 6:
    problems.append("the dup no longer shares its offset")
if "file" not in os.listdir(d):
    problems.append("the directory descriptor lists nothing")
if os.write(null, b"x") != 1:
    problems.append("/dev/null does not take writes")
verdict(problems)
