"""Run by `make` after installing: a CPU machine must not carry CUDA wheels (issue: set-up)."""

from __future__ import annotations

import shutil
import sys
from importlib import metadata

import torch

GPU_ONLY_PREFIXES = ("nvidia-", "triton")


def gpu_only_packages() -> list[str]:
    """Installed distributions that only a CUDA build of torch brings (nvidia-*, triton)."""
    names = {(d.metadata["Name"] or "").lower() for d in metadata.distributions()}
    return sorted(n for n in names if n.startswith(GPU_ONLY_PREFIXES))


def main() -> None:
    has_gpu = shutil.which("nvidia-smi") is not None
    extra = gpu_only_packages()
    if extra and not has_gpu:
        sys.exit(
            "rlvrlab set-up: this machine has no GPU but CUDA packages were installed: "
            + ", ".join(extra)
            + ". Remove .venv and run make again; torch==2.13.0 must be installed first, alone."
        )
    print(f"rlvrlab set-up: torch {torch.__version__}, CUDA packages: {', '.join(extra) or 'none'}")


if __name__ == "__main__":
    main()
