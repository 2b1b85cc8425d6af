"""The errors fusionbench raises for a user to act on, and the one that marks a diverged run.

``UserError`` and its subclasses end the command line with one line, ``fusionbench: error: <where>: <reason>``,
exit status 2 and no traceback (``--debug`` shows it). Everything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (config, data, files): ``where`` names the file (or "command line")."""

    def __init__(self, reason: str, where: str | None = None) -> None:
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason, self.where = reason, where

    def __reduce__(self):  # picklable across worker processes with its parts (not just the joined message)
        return (type(self), (self.reason, self.where))


class TrainingDiverged(RuntimeError):
    """The training (or validation) loss became NaN or inf: the run is recorded as diverged, never as finished."""

    def __init__(self, stage: str, step: int, value: float) -> None:
        super().__init__(f"diverged: {stage} loss {value} at step {step}")
        self.stage, self.step, self.value = stage, step, value
