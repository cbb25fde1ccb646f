import os, select, sys
sys.path.insert(0, os.path.dirname(__file__))
from _common import ready, verdict
r, w = os.pipe()
ep = select.epoll()
ep.register(r, select.EPOLLIN)
ready()
none = ep.poll(0.05)
os.write(w, b"x")
events = ep.poll(1)
problems = []
if none:
    problems.append(f"events before any write: {none}")
if events != [(r, select.EPOLLIN)]:
    problems.append(f"events {events}")
verdict(problems)
