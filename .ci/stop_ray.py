"""Stop the Ray nodes started with the given --temp-dir's, and only them (`ray stop` would stop every Ray
process of the user, a developer's own cluster included): each process whose command line names one of the
temp dirs, with all its descendants (dashboard modules, workers), SIGTERM then SIGKILL."""

import contextlib
import os
import sys
import time

import psutil

dirs = [d for d in sys.argv[1:] if d]
me = psutil.Process(os.getpid())
spared = {me.pid} | {a.pid for a in me.parents()}  # this script and the shell that runs it name the dirs too
roots = [p for p in psutil.process_iter(["cmdline"])
         if p.pid not in spared and any(d in " ".join(p.info["cmdline"] or []) for d in dirs)]
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
print(f"stopped {len(procs)} Ray processes under {', '.join(dirs)}")
