"""The benchmarks' one harness: every run appends its rows, with the machine, the
versions, the commit and the date, to a JSON-lines file under benchmarks/results/, which
is kept in the repository; reports and docs/benchmarks.md are made from those files.

    from harness import record, rows
    record("peers", {"world": ..., "hm": ...})   # appends to results/peers.jsonl
    rows("peers")                                 # every row recorded so far
"""

import datetime
import functools
import json
import os
import platform
import subprocess
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


@functools.lru_cache(maxsize=1)
def environment():
    """What a figure depends on beyond its inputs."""
    import numpy
    import sklearn
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    device = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
              else f"cpu x{os.cpu_count()}")
    return {"machine": f"{platform.machine()} {device}", "python": platform.python_version(),
            "torch": torch.__version__, "sklearn": sklearn.__version__,
            "numpy": numpy.__version__, "commit": commit,
            "date": datetime.date.today().isoformat()}


def record(name, row):
    """Append ``row`` (a dict of JSON values) with the environment to results/NAME.jsonl."""
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{name}.jsonl", "a") as f:
        f.write(json.dumps({**row, "env": environment()}) + "\n")


def rows(name):
    path = RESULTS / f"{name}.jsonl"
    return [json.loads(line) for line in path.open()] if path.exists() else []


def run_world_seeds(name, study, specs, note=None):
    """``study(world, seed)`` for each ``"WORLD:SEED"`` of ``specs``, on one torch thread;
    each row it returns (None: nothing to keep) is recorded to results/NAME.jsonl, with
    ``note`` if given, and printed."""
    import torch

    torch.set_num_threads(1)
    for spec in specs:
        world, seed = spec.rsplit(":", 1)
        row = study(world, int(seed))
        if row is not None:
            record(name, row if note is None else {**row, "note": note})
            print(json.dumps(row), flush=True)
