"""`lowbit imatrix`: an importance matrix from calibration text, in llama.cpp's file format.

The file works with ``llama-quantize --imatrix`` and with lowbit's
``gguf:…+imatrix=FILE`` variants; it is what ``gguf:…+imatrix`` computes on
the fly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lowbit.data import DEFAULT_CALIB_SAMPLES, prepare_calibration
from lowbit.data.windows import DEFAULT_WINDOW
from lowbit.devices import select_device
from lowbit.errors import LowbitError
from lowbit.models import load_model
from lowbit.utils.atomic import check_output_path
from lowbit.utils.progress import info


def run_imatrix(model: str, out: Path, calib: str | None = None, calib_samples: int | None = None,
                window_tokens: int = DEFAULT_WINDOW, seed: int = 0, text_field: str = "text", fmt: str | None = None,
                device: str = "auto", overwrite: bool = False) -> dict[str, Any]:
    """Collect Σx² per input column of every block linear of ``model`` and write it to ``out``."""
    from torch import nn

    from lowbit.methods import select_targets
    from lowbit.methods.gguf import weight_names
    from lowbit.methods.gguf.imatrix import collect_imatrix
    from lowbit.methods.gguf.imatrix_file import write_imatrix

    out = Path(out)
    model_path = Path(model).expanduser()
    check_output_path(out, [model_path] if model_path.exists() else [], overwrite)
    if fmt is not None and fmt not in ("gguf", "dat"):
        raise LowbitError(f"--format must be gguf or dat, got '{fmt}'")
    dev = select_device(device)
    info(f"loading {model}")
    loaded = load_model(model, seed=seed)
    loaded.model.to(dev)
    names, _ = weight_names(loaded.model)
    linears = {n: m for n, m in select_targets(loaded).items()
               if isinstance(m, nn.Linear) and names.get(n, "").startswith("blk.")}
    if not linears:
        raise LowbitError(f"{loaded.name} has no block linears to collect an importance matrix for")
    calib_set = prepare_calibration(loaded.tokenizer, calib, calib_samples or DEFAULT_CALIB_SAMPLES, window_tokens,
                                    seed, text_field)
    im = collect_imatrix(loaded, calib_set, linears, names, dev)
    path = write_imatrix(im, out, fmt)
    return {"out": str(path), "format": fmt or ("dat" if out.suffix == ".dat" else "gguf"), "entries": len(im),
            "chunks": im.chunks, "chunk_size": im.chunk_size, "calib": calib_set.source}
