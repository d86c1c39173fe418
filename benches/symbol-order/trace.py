# Records which functions of a program run, for benches/symbol-order.sh.
#
#   FUNCS=addresses.txt OUT=hits.txt gdb -batch -nx -x trace.py --args PROGRAM [ARGS...]
#
# FUNCS lists function entry addresses (hex, one per line). Each gets a
# one-shot breakpoint; when it is hit its address is appended to OUT and the
# breakpoint is gone, so a function costs one stop however often it runs.
import os

import gdb

funcs = [line.strip() for line in open(os.environ["FUNCS"]) if line.strip()]
out = open(os.environ["OUT"], "a", buffering=1)
for cmd in [
    "set pagination off",
    "set confirm off",
    # Without this gdb removes and re-inserts every breakpoint at every stop.
    "set breakpoint always-inserted on",
    "set print thread-events off",
    "set print inferior-events off",
    "handle SIGPIPE nostop noprint pass",
    "handle SIGTERM nostop noprint pass",
    "handle SIGINT nostop noprint pass",
]:
    gdb.execute(cmd)
gdb.execute("starti", to_string=True)
for address in funcs:
    gdb.Breakpoint("*0x" + address, internal=True, temporary=True)
while True:
    try:
        gdb.execute("continue", to_string=True)
        pc = int(gdb.parse_and_eval("$pc"))
    except gdb.error:
        break  # the program exited
    out.write("%x\n" % pc)
