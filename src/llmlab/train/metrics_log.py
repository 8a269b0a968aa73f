"""metrics.jsonl (rank 0) and TensorBoard when it is installed; on resume, records after the
checkpoint are dropped (they will be recomputed)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from llmlab.io import atomic_write_text


class MetricsLog:
    """metrics.jsonl (rank 0), and TensorBoard when it is installed."""

    def __init__(self, out_dir: Path | None, start_step: int):
        self.path = out_dir / "metrics.jsonl" if out_dir else None
        self.tb = None
        if self.path is None:
            return
        # On resume, drop records from steps after the checkpoint (they will be recomputed).
        kept = []
        if start_step > 0 and self.path.is_file():
            for line in self.path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    if json.loads(line).get("step", 0) <= start_step:
                        kept.append(line)
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:
            pass

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.path is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
