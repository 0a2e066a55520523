"""Run ``tinylora`` and SIGKILL it right after step N's metrics line is written (test-only).

``python tests/die_after_step.py N train --config c.yaml`` dies at exactly the same point of the
run on any machine, however fast: a kill sent from outside can land after the run has finished.
"""

import os
import signal
import sys

from tinylora.cli.main import main
from tinylora.trainers.base import Trainer


def _dies_after(n: int):
    real = Trainer.log

    def log(self, name, records):
        real(self, name, records)
        if name == "metrics.jsonl" and any(r.get("step") == n for r in records):
            os.kill(os.getpid(), signal.SIGKILL)

    return log


if __name__ == "__main__":
    Trainer.log = _dies_after(int(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
