"""Loading: a checkpoint becomes an fp32 eval-mode detector without running code the file chooses."""

from .checkpoint import LoadedModel, load, save_checkpoint
from .fork import import_plugin

__all__ = ["LoadedModel", "import_plugin", "load", "save_checkpoint"]
