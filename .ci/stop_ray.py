"""Stop the Ray nodes started with the given --temp-dir's, and only them (`ray stop` would stop every Ray
process of the user, a developer's own cluster included): each process whose command line names one of the
temp dirs, or (`gcs=PORT`) that connects to the GCS at that port (the Ray client server, which `ray start`
leaves behind as an orphan), with all its descendants (dashboard modules, workers), SIGTERM then SIGKILL."""

import contextlib
import os
import re
import sys
import time

import psutil

args = [a for a in sys.argv[1:] if a]
dirs = [a for a in args if not a.startswith("gcs=")]
gcs = [re.compile(rf"--address=\S+:{re.escape(a[4:])}(\s|$)") for a in args if a.startswith("gcs=")]


def ours(cmdline: list[str] | None) -> bool:
    line = " ".join(cmdline or [])
    return any(d in line for d in dirs) or any(g.search(line) for g in gcs)


me = psutil.Process(os.getpid())
spared = {me.pid} | {a.pid for a in me.parents()}  # this script and the shell that runs it name the dirs too
roots = [p for p in psutil.process_iter(["cmdline"])
         if p.pid not in spared and ours(p.info["cmdline"])]
procs = {p.pid: p for p in roots}
for p in roots:
    with contextlib.suppress(psutil.Error):
        procs.update({c.pid: c for c in p.children(recursive=True)})
for pid in spared:
    procs.pop(pid, None)
for p in procs.values():
    with contextlib.suppress(psutil.Error):
        p.terminate()
_, alive = psutil.wait_procs(list(procs.values()), timeout=5)
for p in alive:
    with contextlib.suppress(psutil.Error):
        p.kill()
time.sleep(0.5)
print(f"stopped {len(procs)} Ray processes of {', '.join(args)}")
