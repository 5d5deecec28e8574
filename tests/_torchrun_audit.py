"""Run ``python -m otreweight ARGS`` recording every file this process writes under a folder.

Started by ``torchrun`` in tests/test_distributed.py: ``_torchrun_audit.py WATCHED REPORT_PREFIX
ARGS...``. With ``OTREWEIGHT_TEST_EPOCH_SLEEP=S`` every training epoch starts with a pause of
S seconds. Opens for writing, renames and new folders below WATCHED are listed in
``REPORT_PREFIX<rank>.json`` (written outside WATCHED) when the command ends.
"""
import json
import os
import sys

watched, prefix, args = os.path.realpath(sys.argv[1]), sys.argv[2], sys.argv[3:]
writes = []
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND


def below(path) -> bool:
    try:
        return os.path.realpath(os.fsdecode(path)).startswith(watched)
    except (TypeError, ValueError):
        return False


def hook(event, a):
    if event == "open" and a[0] is not None and not isinstance(a[0], int):
        mode, flags = a[1], a[2]
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & WRITE_FLAGS)
        if writing and below(a[0]):
            writes.append(["open", os.fsdecode(a[0])])
    elif event in ("os.rename", "os.replace") and (below(a[0]) or below(a[1])):
        writes.append([event, os.fsdecode(a[1])])  # the destination
    elif event in ("os.mkdir", "os.remove", "shutil.move") and below(a[0]):
        writes.append([event, os.fsdecode(a[0])])


sys.addaudithook(hook)
from otreweight.cli import main  # noqa: E402

pause = float(os.environ.get("OTREWEIGHT_TEST_EPOCH_SLEEP", "0"))
if pause:  # a pause before every epoch (the results do not change), so a test can kill the job mid-stage
    import time

    from otreweight.train import loop

    one_epoch = loop.train_one_epoch

    def slow_epoch(run, epoch):
        time.sleep(pause)
        return one_epoch(run, epoch)

    loop.train_one_epoch = slow_epoch

rc = main(args)
with open(f"{prefix}{os.environ.get('RANK', '0')}.json", "w") as fh:
    json.dump({"rc": rc, "writes": writes}, fh)
sys.exit(rc)
