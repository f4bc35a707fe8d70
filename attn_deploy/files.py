"""Output files: written whole or not at all, and never over an existing file unasked."""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import AttnDeployError


def model_file(path: Path, suffix: str, kind: str) -> Path:
    """``path`` itself, or for a model directory the first file in it ending in ``suffix``."""
    if not path.is_dir():
        return path
    found = sorted(path.glob(f"*{suffix}"))
    if not found:
        raise AttnDeployError(f"{path} holds no {kind} {suffix} model")
    return found[0]


def check_writable(path: Path, force: bool) -> None:
    """Refuse to replace an existing output unless ``force`` is given."""
    if path.exists() and not force:
        raise AttnDeployError(f"{path} already exists; pass --force to overwrite it")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _as_if_created(path: Path, mode: int) -> None:
    """mkstemp and mkdtemp make private files (0600, 0700); give the output the permissions ``open`` would."""
    path.chmod(mode & ~_umask())


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        _as_if_created(Path(tmp), 0o666)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_dir_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary directory beside ``path``, then move it into place whole."""
    import shutil

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write(tmp)
        _as_if_created(tmp, 0o777)
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
