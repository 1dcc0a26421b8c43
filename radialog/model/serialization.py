"""Reading PyTorch pickle files (`.pth`, `.pt`, `.ckpt`, `.bin`) safely."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from radialog.errors import CheckpointError


def load_torch_file(path: str | Path, allow_pickle: bool = False) -> Any:
    """`torch.load` with `weights_only` (tensors and plain containers only); full unpickling, which can run
    code from the file, only when the caller says the file is trusted."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # The restricted unpickler names a class it refused as "Unsupported global"; anything else is garbage.
        if "Unsupported global" not in str(err):
            raise CheckpointError(f"{path} is not a readable PyTorch file ({err})") from None
        if not allow_pickle:
            raise CheckpointError(
                f"{path} holds Python objects besides tensors and is not loaded by default; "
                "`radialog convert --allow-pickle` loads such a file if you trust where it came from"
            ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch file ({err})") from None
    return torch.load(path, map_location="cpu", weights_only=False)
