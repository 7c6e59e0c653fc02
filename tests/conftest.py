"""Shared fixtures: tiny models, a private cache, quiet progress."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lowbit.utils.progress import set_quiet


@pytest.fixture(autouse=True, scope="session")
def _quiet() -> None:
    set_quiet(True)


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Tests must not depend on (or pollute) the user's cache, except that the
    # bundled model's float conversion (~30 s) is shared when LOWBIT_CACHE is set.
    if "LOWBIT_CACHE" not in os.environ:
        os.environ["LOWBIT_CACHE"] = str(tmp_path_factory.mktemp("lowbit-cache"))


def devices() -> list[str]:
    """CPU always; CUDA when present (never required)."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=devices())
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


def assert_similar(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype | None = None) -> None:
    """Closeness with tolerances chosen per dtype, in one place."""
    dtype = dtype or a.dtype
    tol = {torch.float32: (1e-5, 1e-6), torch.float16: (1e-3, 1e-4), torch.bfloat16: (1e-2, 1e-3)}[dtype]
    torch.testing.assert_close(a.float(), b.float(), rtol=tol[0], atol=tol[1])


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    """A small English text file with several paragraphs."""
    from pydoc_data.topics import topics

    path = tmp_path / "text.txt"
    path.write_text("\n\n".join(topics[k] for k in sorted(topics)[:20]), encoding="utf-8")
    return path
