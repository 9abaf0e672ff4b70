"""Training hooks the NASNet detector needs on top of DefaultTrainer's."""
from __future__ import annotations

from detectron2.engine import HookBase
from torch import nn


def set_drop_path_progress(model: nn.Module, progress: float) -> int:
    """Call ``set_drop_path_progress`` on every NASNet inside ``model``; return how many."""
    count = 0
    for m in model.modules():
        if m is not model and hasattr(m, "set_drop_path_progress") and hasattr(m, "forward_cells"):
            m.set_drop_path_progress(progress)
            count += 1
    return count


class DropPathScheduleHook(HookBase):
    """Drive ScheduledDropPath from the trainer's iteration.

    TF's schedule is linear in ``global_step / total_training_steps`` (clipped at 1), so the drop
    probability grows during training. Detection training is one run of SOLVER.MAX_ITER
    iterations (or MODEL.NASNET.DROP_PATH_TOTAL_STEPS when set), and resuming sets the right
    progress again at the first step.
    """

    def __init__(self, total_steps: int):
        self.total_steps = max(int(total_steps), 1)

    def before_step(self) -> None:
        model = self.trainer.model
        model = getattr(model, "module", model)  # DistributedDataParallel
        set_drop_path_progress(model, min(1.0, self.trainer.iter / self.total_steps))
