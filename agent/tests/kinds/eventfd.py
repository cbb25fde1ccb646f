import os, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
fd = os.eventfd(5, os.EFD_NONBLOCK)
os.eventfd_write(fd, 7)
ready()
v = os.eventfd_read(fd)
verdict([] if v == 12 else [f"counter {v}, not 12"])
