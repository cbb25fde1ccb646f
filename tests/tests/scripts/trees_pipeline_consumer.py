# The end of a pipeline: reads "LINE <n>" lines, checks that the numbers
# follow each other, prints "got <n>" every 25 lines and, at end of file,
# "end <count> ok" or "end <count> broken".
import sys

want = 0
broken = False
for line in sys.stdin:
    words = line.split()
    if len(words) != 2 or words[0] != "LINE" or int(words[1]) != want:
        broken = True
    want += 1
    if want % 25 == 0:
        print("got", want, flush=True)
print("end", want, "broken" if broken else "ok", flush=True)
