"""QAT checkpoints: safetensors for every tensor (weights, scales, Adam moments), JSON for the rest.

Layout of a checkpoint folder (replaced atomically at every save, so a crash
mid-write leaves the previous one intact)::

    state.safetensors   module/<linear>.<key>, adam/<param>/exp_avg|exp_avg_sq, eval/<tensor>
    state.json          variant, structure, model, training-data hash, step, Adam step,
                        losses, curve, per-module meta

A run may resume with a different schedule (``+steps``, ``+lr``, ``+tokens``,
``+batch``, ``+loss``), e.g. a lower learning rate after a divergence, but not
with a different structure (method, scheme, init, ``+lsq``, ``+a8``, ``+lm_head``):
those change what the tensors mean.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lowbit import __version__
from lowbit.errors import LowbitError
from lowbit.qat.trainer import TrainLog
from lowbit.utils.atomic import atomic_dir

FORMAT = "lowbit-qat-checkpoint"
VERSION = 1
STATE = "state.safetensors"
INFO = "state.json"
#: Options that change the parametrisation; a checkpoint only resumes under the same values.
STRUCTURE_OPTIONS = ("init", "lsq", "a8", "lm_head")


def structure_of(method: str, scheme: str, options: dict[str, Any]) -> dict[str, Any]:
    """The parts of a variant a checkpoint's tensors depend on."""
    return {"method": method, "scheme": scheme, **{k: options.get(k) for k in STRUCTURE_OPTIONS}}


def save_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Write (or replace) the checkpoint in ``folder``."""
    doc = {"format": FORMAT, "version": VERSION, "lowbit_version": __version__, **info}
    with atomic_dir(Path(folder), overwrite=True) as tmp:
        save_file(tensors, str(tmp / STATE), metadata={"format": "pt"})
        (tmp / INFO).write_text(json.dumps(doc, indent=1), encoding="utf-8")


def read_info(folder: Path) -> dict[str, Any]:
    """The JSON part of the checkpoint in ``folder`` (validated)."""
    path = Path(folder) / INFO
    if not path.is_file():
        raise LowbitError(f"no QAT checkpoint in {folder} ({INFO} missing); nothing to resume")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LowbitError(f"{path} is not valid JSON: {e}") from e
    if doc.get("format") != FORMAT:
        raise LowbitError(f"{path} is not a lowbit QAT checkpoint")
    if int(doc.get("version", 0)) > VERSION:
        raise LowbitError(f"{path} was written by a newer lowbit (checkpoint version {doc.get('version')})")
    if not (Path(folder) / STATE).is_file():
        raise LowbitError(f"QAT checkpoint {folder} lacks {STATE}")
    return doc


def read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of the checkpoint in ``folder``."""
    return load_file(str(Path(folder) / STATE))


def check_resumable(info: dict[str, Any], variant_text: str, structure: dict[str, Any], model: str,
                    train_sha256: str) -> list[str]:
    """Raise :class:`LowbitError` if the checkpoint cannot continue this run; else notes on what changed."""
    saved = info.get("structure", {})
    if saved != structure:
        diff = [f"{k}: checkpoint {saved.get(k)!r}, now {structure.get(k)!r}"
                for k in sorted(set(saved) | set(structure)) if saved.get(k) != structure.get(k)]
        raise LowbitError(f"cannot resume: the checkpoint was trained as '{info.get('variant')}', not "
                          f"'{variant_text}' ({'; '.join(diff)}); use the same variant or a new --out")
    if info.get("model") != model:
        raise LowbitError(f"cannot resume: the checkpoint was trained from model '{info.get('model')}', not '{model}'")
    if info.get("train_sha256") != train_sha256:
        raise LowbitError("cannot resume: the training text differs from the checkpoint's (other --train/--eval "
                          "text, --window-tokens or --seed)")
    notes = []
    if info.get("variant") != variant_text:
        notes.append(f"resuming '{info.get('variant')}' as '{variant_text}' (schedule options changed)")
    return notes


def log_from_info(info: dict[str, Any]) -> TrainLog:
    """The training log stored in a checkpoint."""
    log = info.get("log", {})
    return TrainLog(int(log.get("step", 0)), int(log.get("tokens_seen", 0)), float(log.get("seconds", 0.0)),
                    list(log.get("losses", [])), list(log.get("curve", [])))
