"""Run ``python -m siamese_core`` commands in one process that has two logical CPU devices (for test_devices.py).

    python tests/two_devices.py COMMANDS.json RESULTS.json

Logical devices can only be made before TensorFlow starts its runtime, which the pytest process has long
done, so the multi-device tests run their commands here. COMMANDS.json is a list of argument lists;
RESULTS.json gets, for each, ``{"argv", "rc", "stderr"}`` (the lines the command wrote to stderr).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(commands: Path, results: Path) -> None:
    from siamese_core.core.backend import tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    from siamese_core.cli import main as cli
    out = []
    for argv in json.loads(commands.read_text()):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = cli([str(a) for a in argv])
        out.append({"argv": argv, "rc": rc, "stderr": [ln for ln in err.getvalue().splitlines() if ln.strip()]})
    results.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
