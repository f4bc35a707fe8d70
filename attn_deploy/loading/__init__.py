"""Loading: a checkpoint becomes an fp32 eval-mode detector without running code the file chooses."""

from .checkpoint import LoadedModel, import_plugin, load, save_checkpoint

__all__ = ["LoadedModel", "import_plugin", "load", "save_checkpoint"]
