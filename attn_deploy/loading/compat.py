"""Old checkpoints made current: the attributes today's ultralytics expects that older versions did not store.

Ultralytics fixes these itself when it loads a weight (``load_checkpoint`` in ``nn/tasks.py``: the task guessed
from the head, a default stride, ``recompute_scale_factor`` on ``nn.Upsample``). The same fixes are applied here
after unpickling, as data only: each reads the class of a module or whether an attribute is there, sets a plain
value, and calls nothing from the file. Every fix applied is said, so the load report shows what was changed.
"""

import torch
from torch import nn

from ..heads import head_module, task_of


def apply(model: nn.Module) -> list[str]:
    """Fix ``model`` in place as ultralytics does on load; one line per fix applied."""
    return [said for fix in (_task, _stride, _upsample) if (said := fix(model))]


def _task(model: nn.Module) -> None:
    """The task from the head's class. No version stores it in the model, so this fix is not said: it would be said
    of every file (ultralytics guesses it on load too)."""
    if "task" not in vars(model) and head_module(model) is not None:
        model.task = task_of(model)


def _stride(model: nn.Module) -> str | None:
    if "stride" in vars(model) or "stride" in model._buffers:
        return None
    model.stride = torch.tensor([32.0])
    return "stride set to 32: the file does not record it (ultralytics' default on load)"


def _upsample(model: nn.Module) -> str | None:
    old = [m for m in model.modules() if type(m) is nn.Upsample and "recompute_scale_factor" not in vars(m)]
    for m in old:
        m.recompute_scale_factor = None
    return f"{len(old)} nn.Upsample given recompute_scale_factor=None (saved before torch 1.11)" if old else None
