"""Training loop, checkpoints, resume and divergence, through the qat method."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from lowbit.data import prepare_data
from lowbit.errors import LowbitError
from lowbit.methods import quantize_model, resolve_variant
from lowbit.methods.qat import QAT, QATRun
from lowbit.models import load_model
from lowbit.qat.trainer import QATTrainer, TrainConfig, TrainingDiverged, kd_loss

WINDOW = 64


@pytest.fixture(scope="module")
def train_windows():  # type: ignore[no-untyped-def]
    loaded = load_model("tiny-llama")
    return prepare_data(loaded.tokenizer, eval_tokens=256, calib_samples=6, window_tokens=WINDOW).calib


def _run(text: str, calib, run: QATRun | None = None):  # type: ignore[no-untyped-def]
    loaded = load_model("tiny-llama")
    v = resolve_variant(text)
    result = quantize_model(loaded, dataclasses.replace(v, method=QAT(run)), calib)
    return loaded, result


def _run_settings(folder: Path, text: str, **kw) -> QATRun:  # type: ignore[no-untyped-def]
    return QATRun(checkpoint_dir=folder, model="tiny-llama", variant=text, train_sha256="t", **kw)


def test_schedule_warms_up_then_decays() -> None:
    cfg = TrainConfig(steps=100, lr=1e-3)
    lrs = [cfg.lr_at(s) for s in range(100)]
    assert cfg.warmup == 10 and lrs[0] < lrs[9] <= 1e-3
    assert lrs[10] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4, rel=0.01)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise() -> None:
    a = torch.randn(1, 5, 11, generator=torch.Generator().manual_seed(0))
    assert float(kd_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_loss(a, a * 2)) > 0


def _kd_on(model: torch.nn.Module, teacher: torch.nn.Module, windows: torch.Tensor) -> float:
    with torch.no_grad():
        return float(kd_loss(model(input_ids=windows).logits, teacher(input_ids=windows).logits))


def test_training_is_deterministic_and_lowers_the_loss(train_windows) -> None:  # type: ignore[no-untyped-def]
    text = "qat:w3g64+steps=12+lr=1e-4"
    a, ra = _run(text, train_windows)
    b, rb = _run(text, train_windows)
    for name, q in ra.tensors.items():
        assert torch.equal(q.codes, rb.tensors[name].codes)
    assert len(ra.stats["qat"]["losses"]) == 12 and ra.stats["qat"]["tokens_seen"] == 12 * WINDOW
    rtn = load_model("tiny-llama")
    quantize_model(rtn, resolve_variant("rtn:w3g64"), None)
    teacher = load_model("tiny-llama").model
    before, after = _kd_on(rtn.model, teacher, train_windows.windows), _kd_on(a.model, teacher, train_windows.windows)
    assert after < 0.8 * before, (before, after)


def test_resume_continues_bit_exactly(train_windows, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    text = "qat:w3g64+steps=4+lr=1e-3+lsq"
    _, full = _run(text, train_windows)
    # Interrupted after one step (a tiny time budget stops after the first), then resumed.
    _, cut = _run(text, train_windows, _run_settings(tmp_path / "ck", text, checkpoint_every=1, max_seconds=1e-9))
    assert not cut.stats["qat"]["finished_schedule"]
    info = json.loads((tmp_path / "ck" / "state.json").read_text())
    assert info["log"]["step"] == 1 and info["adam_step"] == 1
    _, resumed = _run(text, train_windows, _run_settings(tmp_path / "ck", text, resume=True))
    assert resumed.stats["qat"]["step"] == 4
    for name, q in full.tensors.items():
        assert torch.equal(q.codes, resumed.tensors[name].codes), name
        assert torch.equal(q.params["scale"], resumed.tensors[name].params["scale"]), name


def test_resume_refuses_another_structure_but_allows_another_schedule(train_windows, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    text = "qat:w3g64+steps=2+lr=1e-3"
    _run(text, train_windows, _run_settings(tmp_path / "ck", text, checkpoint_every=1))
    for other in ("qat:w4g64+steps=2", "qat:w3g64+steps=2+lsq", "qat:w3g64+steps=2+a8"):
        with pytest.raises(LowbitError, match="cannot resume"):
            _run(other, train_windows, _run_settings(tmp_path / "ck", other, resume=True))
    longer = "qat:w3g64+steps=3+lr=5e-4"
    _, r = _run(longer, train_windows, _run_settings(tmp_path / "ck", longer, resume=True))
    assert r.stats["qat"]["step"] == 3


def _nan_at_step(monkeypatch: pytest.MonkeyPatch, bad_step: int) -> None:
    """Make the loss NaN at ``bad_step`` (a frozen grid bounds the weights, so even a huge lr rarely does)."""
    real = QATTrainer._loss

    def loss(self: QATTrainer, ids: torch.Tensor) -> torch.Tensor:
        value = real(self, ids)
        return value * float("nan") if self.log.step + 1 == bad_step else value

    monkeypatch.setattr(QATTrainer, "_loss", loss)


def test_nan_stops_and_keeps_the_last_good_checkpoint(train_windows, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _nan_at_step(monkeypatch, 4)
    text = "qat:w3g64+steps=6+lr=1e-3"
    with pytest.raises(TrainingDiverged, match="at step 4 .*last good checkpoint is step 2") as e:
        _run(text, train_windows, _run_settings(tmp_path / "ck", text, checkpoint_every=2))
    assert e.value.step == 4
    info = json.loads((tmp_path / "ck" / "state.json").read_text())
    assert info["log"]["step"] == 2 and len(info["log"]["losses"]) == 2


def test_nan_without_checkpoints_says_which_step(train_windows, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    _nan_at_step(monkeypatch, 2)
    with pytest.raises(TrainingDiverged, match="at step 2 "):
        _run("qat:w3g64+steps=5", train_windows)


def test_a_huge_lr_stays_finite_on_a_frozen_grid(train_windows) -> None:  # type: ignore[no-untyped-def]
    # Weights pushed far outside the grid clamp to its ends (and stop receiving gradient).
    loaded, r = _run("qat:w3g64+steps=3+lr=1e30", train_windows)
    assert all(torch.isfinite(torch.tensor(r.stats["qat"]["losses"])))


def test_training_text_shorter_than_a_window_is_refused() -> None:
    loaded = load_model("tiny-llama")
    with pytest.raises(LowbitError, match="at least one window"):
        quantize_model(loaded, resolve_variant("qat:w4g64+steps=1"), None)
