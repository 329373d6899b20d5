"""TensorBoard event files without TensorFlow: the epoch scalars (loss, accuracy, learning
rate) written with the ``tensorboard`` package's own event writer, so they appear on every
Keras backend, under ``tensorboard/train`` and ``tensorboard/validation`` with the tags
Keras's TensorBoard callback uses (``epoch_loss``, ``epoch_accuracy``, ...)."""

from __future__ import annotations

import time
from pathlib import Path


class EpochScalars:
    """One event file per side (train, validation); :meth:`write` adds an epoch's values."""

    def __init__(self, log_dir: Path):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.writers = {side: EventFileWriter(str(Path(log_dir) / side))
                        for side in ("train", "validation")}

    def write(self, epoch: int, logs: dict) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        for side, writer in self.writers.items():
            values = []
            for key, value in logs.items():
                if value is None:
                    continue
                if side == "validation" and key.startswith("val_"):
                    tag = "epoch_" + key.removeprefix("val_")
                elif side == "train" and not key.startswith("val_"):
                    tag = "epoch_" + key
                else:
                    continue
                values.append(summary_pb2.Summary.Value(tag=tag, simple_value=float(value)))
            if values:
                writer.add_event(event_pb2.Event(wall_time=time.time(), step=epoch,
                                                 summary=summary_pb2.Summary(value=values)))
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
