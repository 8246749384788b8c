"""Files that are either complete or not there: a temporary file in the destination's own directory, fsync,
rename over the destination, fsync the directory.

The rename is atomic only within one filesystem, which is why the temporary file lives beside its destination
and not in $TMPDIR (a run directory on scratch, NFS, a bind mount or a tmpfs would turn a move from $TMPDIR
into a copy over the old file: a full disk or a kill during that copy would truncate the only good copy).
Until the rename the previous file stays whole; after a failure the temporary file is removed.

`AtomicCheckpointIO` is Lightning's checkpoint writer done this way, refusing a checkpoint whose weights are
not finite (a NaN is never saved as the last good checkpoint).
"""
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call write(file) on a temporary file beside `path`, then make it `path` in one rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # the rename itself survives a power cut once the directory entry is on disk
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # some filesystems cannot fsync a directory; the rename is still atomic
        pass
    finally:
        os.close(dir_fd)


def write_text(path: Path, text: str) -> None:
    write_atomically(path, lambda f: f.write(text.encode()))


def non_finite_tensors(state: dict, prefix: str = "") -> list[str]:
    """Names of the floating-point tensors in a (nested) state dict that hold a NaN or an infinity."""
    bad = []
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(name)
        elif isinstance(value, dict):
            bad += non_finite_tensors(value, name + ".")
    return bad


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch.save checkpoints, written atomically beside their destination; a checkpoint whose
    model weights are not finite is refused (FloatingPointError) and the previous one is kept."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        path = Path(path)
        bad = non_finite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            raise FloatingPointError(
                f"the weights are not finite at step {checkpoint.get('global_step')} ({len(bad)} tensors, e.g. "
                f"{', '.join(bad[:3])}); checkpoint {path} was not written, the previous one is kept")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda f: torch.save(checkpoint, f))
