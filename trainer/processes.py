"""Which process of a multi-process launch this is (torchrun, `accelerate launch`, MPI).

Read by the runner (only the main process writes the run folder's records) and by the stages that
coordinate their processes (trainer/train.py). Environment variables only: importing this module
never pulls in torch.
"""

from __future__ import annotations

import os


def _env_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        if os.environ.get(name, "").strip():
            return int(os.environ[name])
    return default


def process_rank() -> int:
    """Global rank of this process in a multi-process launch (set by torchrun/`accelerate launch`,
    or by MPI); 0 when the process runs alone."""
    return _env_int(("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"), 0)


def world_size() -> int:
    """Number of processes of a multi-process launch; 1 when the process runs alone."""
    return _env_int(("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"), 1)


def is_main_process() -> bool:
    """The process that writes the run folder's records (the only one outside a launch)."""
    return process_rank() == 0
