# Prints the body at the url argv[1], or fails with the error.
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode(), end="")
