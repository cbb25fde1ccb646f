# Starts the program in argv[1:] with no descriptor above 2 (none of the
# harness leaks in), after printing its pid.
import os, sys
os.closerange(3, 65536)
print("pid", os.getpid(), flush=True)
os.execvp(sys.argv[1], sys.argv[1:])
