"""The one exception base of the project, and one subclass per area.

Why one base: every CLI catches ``NASNetError`` and prints it as a single ``error:`` line, so a
user's mistake (a bad file, field or value) never ends in a traceback, while a bug in our code
(anything that is *not* a ``NASNetError``) still does. Each message names the file, field and
value and says what to do. The area classes also derive from the builtin they replaced
(``ValueError`` / ``RuntimeError`` / ``OSError``) so that older ``except`` clauses keep working.

Pure stdlib: importable from every layer, including the torch-free ``space`` layer.
"""
from __future__ import annotations


class NASNetError(Exception):
    """Base of every error that means "the input is wrong, here is what to do"."""

    def __init__(self, *args: object) -> None:
        text = args[0] if len(args) == 1 else None
        if isinstance(text, str) and "\nOriginal Traceback" in text:
            # re-raised by a torch DataLoader worker as "Caught X in DataLoader worker process N." plus
            # the worker's traceback, whose last line is "module.X: <the one-line message>": keep that
            last = text.rstrip().splitlines()[-1]
            args = (last.split(": ", 1)[1] if ": " in last else last,)
        super().__init__(*args)


class ConfigError(NASNetError, ValueError):
    """A config file, key, value or command-line override that cannot be used."""


class GenotypeError(NASNetError, ValueError):
    """A genotype (name, JSON file or object) that is malformed or not in the search space."""


class DataError(NASNetError, ValueError):
    """A dataset (image folder, COCO json, image file) that cannot be used."""


class WeightsError(NASNetError, RuntimeError):
    """A weights or checkpoint file: missing, truncated, corrupt, unsafe, or for another model."""


class UnsafeFileError(WeightsError):
    """A pickle that would run code to load, refused; ``--allow-unsafe-pickle`` is the way out.

    Separate from other WeightsErrors because a resume may skip a *torn* checkpoint and try an
    older one, but must stop at a *planted* one.
    """


class DeployError(NASNetError, RuntimeError):
    """An export or exported file that cannot be made or run (format, runtime, missing deploy extra)."""


class StateError(NASNetError, RuntimeError):
    """A run's saved state (trial log, strategy state, lock) that cannot be resumed from."""


class LockError(StateError):
    """An output folder already owned by another running process."""


class PipelineError(NASNetError, RuntimeError):
    """A stage of ``tools/run_pipeline.py`` whose tool failed, or whose outputs are missing."""
