"""A py-spy profile of a process while a bench measures it: the functions that held the CPU
(self samples: the innermost frame of each sampled stack), for the top entries of a flame graph."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path


class Profile:
    """py-spy sampling `pid` from start to stop, into `raw` (collapsed stacks, one per line with its count)."""

    def __init__(self, pid: int, raw: Path):
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if spy is None:
            raise RuntimeError("py-spy is missing: it comes with ray[default] in requirements.lock; run `make install`")
        self.raw = raw
        self.process = subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(raw),
                                         "--nonblocking", "--rate", "200"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)

    def stop(self) -> list[tuple[str, float]]:
        """Stop sampling; the functions with the most self samples, as shares of all samples."""
        self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=60)
        if not self.raw.exists():
            raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")
        return top_functions(self.raw.read_text())


def top_functions(collapsed: str, count: int = 10) -> list[tuple[str, float]]:
    own: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, samples = line.rpartition(" ")
        if stack and samples.isdigit():
            own[stack.split(";")[-1]] += int(samples)
    total = sum(own.values()) or 1
    return [(frame, samples / total) for frame, samples in own.most_common(count)]
