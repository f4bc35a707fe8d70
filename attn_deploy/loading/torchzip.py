"""Reading torch's zip checkpoint format without torch's unpickler: data.pkl and the tensor storages.

A ``torch.save`` file is a zip archive with one top folder: ``data.pkl`` (the pickle), ``data/<key>``
(one uncompressed entry per storage) and ``byteorder``. Sizes come from the zip directory, so a
storage that declares more elements than its entry holds is refused before anything is allocated.
"""

import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .unpickler import Refused

# torch.save's legacy (pre-1.6) format starts with this number, pickled.
LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
ZIP_MAGIC = b"PK\x03\x04"


class NotTorchZip(Exception):
    """The file is not in torch's zip format; ``legacy`` when it is torch's older format."""

    def __init__(self, reason: str, legacy: bool = False):
        super().__init__(reason)
        self.legacy = legacy


@dataclass
class Archive:
    """An opened torch zip checkpoint: its pickle, and storages read on demand with their sizes checked."""

    zip: zipfile.ZipFile
    prefix: str
    size: int  # bytes of the whole file: no entry may claim more
    data_pkl: bytes = b""
    storages: dict[str, torch.storage.TypedStorage] = field(default_factory=dict)

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.zip.close()

    def entry(self, name: str) -> zipfile.ZipInfo:
        try:
            info = self.zip.getinfo(f"{self.prefix}/{name}")
        except KeyError:
            raise Refused(name, "is missing from the archive") from None
        if info.compress_type != zipfile.ZIP_STORED or info.file_size > self.size:
            raise Refused(name, f"declares {info.file_size} bytes, more than the file holds, or is compressed "
                          "(torch writes entries uncompressed)")
        return info

    def storage(self, storage_type: type, key: str, numel: int) -> torch.storage.TypedStorage:
        """The storage ``data/<key>`` as ``storage_type`` with ``numel`` elements, refused when the entry is short."""
        if key in self.storages:
            return self.storages[key]
        dtype = torch.uint8 if storage_type is torch.UntypedStorage else _dtype_of(storage_type)
        info = self.entry(f"data/{key}")
        nbytes = numel * dtype.itemsize
        if nbytes > info.file_size:
            raise Refused(f"storage {key}", f"declares {numel} {dtype} elements ({nbytes} bytes) but its entry "
                          f"holds {info.file_size} bytes")
        raw = bytearray(self.zip.read(info)[:nbytes])
        untyped = torch.frombuffer(raw, dtype=torch.uint8).untyped_storage() if raw else torch.UntypedStorage(0)
        storage = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        self.storages[key] = storage
        return storage


def _dtype_of(storage_type: type) -> torch.dtype:
    with warnings.catch_warnings():  # the legacy storage classes warn that they are deprecated; torch.save names them
        warnings.simplefilter("ignore")
        return storage_type.dtype


def _is_legacy(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(64)
    return head.startswith(b"\x80") and LEGACY_MAGIC in head


def open_archive(path: Path) -> Archive:
    """Open ``path`` as a torch zip checkpoint and read its data.pkl; raise NotTorchZip or Refused otherwise."""
    if not zipfile.is_zipfile(path):
        if _is_legacy(path):
            raise NotTorchZip("it is in torch's legacy (non-zip) format", legacy=True)
        raise NotTorchZip("it is not a zip archive, or it is truncated")
    with path.open("rb") as f:
        head = f.read(4)
    if head != ZIP_MAGIC:
        # torch.load decides by the first bytes: it would read such a file as a legacy pickle and run it.
        raise Refused("the file", "is a zip archive behind other data (torch.load would read that data as a "
                      "legacy pickle): two readers would read it differently")
    try:
        archive = zipfile.ZipFile(path)
    except Exception as e:
        raise NotTorchZip(f"its zip directory is unreadable ({type(e).__name__}: {e})") from None
    try:
        return _read(archive, path)
    except BaseException:
        archive.close()
        raise


def _check_entries(archive: zipfile.ZipFile) -> None:
    """One reading only: entries start at the file's start, each name once, every path plainly inside one folder."""
    infos = archive.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise Refused("the archive", "names an entry twice; readers differ in which one they take")
    if infos and min(i.header_offset for i in infos) != 0:
        raise Refused("the archive", "does not start with its first entry: other data lies before it")
    for name in names:
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in (
                ".", ".."):
            raise Refused(f"entry {name!r}", "is not a plain path inside the archive's folder")


def _read(archive: zipfile.ZipFile, path: Path) -> Archive:
    _check_entries(archive)
    pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise NotTorchZip(f"it has {len(pickles)} top-level data.pkl entries, not one")
    opened = Archive(archive, pickles[0].rpartition("/")[0], path.stat().st_size)
    _check_byteorder(opened)
    opened.data_pkl = archive.read(opened.entry("data.pkl"))
    return opened


def _check_byteorder(archive: Archive) -> None:
    if f"{archive.prefix}/byteorder" not in archive.zip.namelist():
        return  # files from before torch wrote the record are little-endian
    order = archive.zip.read(archive.entry("byteorder")).decode("ascii", "replace")
    if order != sys.byteorder:
        raise Refused("byteorder", f"is {order!r}; this machine is {sys.byteorder}-endian")
