import json
from pathlib import Path

import pytest

from lowbit.data import prepare_data
from lowbit.data.sources import load_documents, split_paragraph_documents
from lowbit.data.split import doc_hash, split_documents
from lowbit.errors import LowbitError
from lowbit.models.tiny import byte_tokenizer


def test_builtins_are_there() -> None:
    docs = load_documents("builtin:python-docs")
    assert len(docs) > 50 and sum(map(len, docs)) > 300_000
    code = load_documents("builtin:python-code")
    assert len(code) > 100 and any("def " in d for d in code)


def test_text_file_is_cut_into_paragraph_documents(text_file: Path) -> None:
    docs = load_documents(str(text_file))
    assert len(docs) > 3
    assert all(len(d) >= 2000 for d in docs[:-1])
    assert "".join(docs).replace("\n", "") == text_file.read_text().replace("\n", "")


def test_folder_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha " * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("beta " * 100)
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "gamma"}) + "\n\n" + json.dumps({"body": "delta"}) + "\n")
    assert len(load_documents(str(tmp_path), text_field="body")) == 4
    assert load_documents(str(tmp_path / "c.jsonl"), text_field="body") == ["gamma", "delta"]


@pytest.mark.parametrize(("content", "match"), [
    ("{not json}\n", "not valid JSON"),
    (json.dumps({"other": "x"}) + "\n", "no field 'text'"),
    (json.dumps({"text": 3}) + "\n", "not a string"),
])
def test_bad_jsonl(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(LowbitError, match=match):
        load_documents(str(path))


def test_missing_and_empty_sources(tmp_path: Path) -> None:
    with pytest.raises(LowbitError, match="not found"):
        load_documents(str(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("   \n\n  ")
    with pytest.raises(LowbitError, match="empty"):
        load_documents(str(tmp_path / "empty.txt"))
    with pytest.raises(LowbitError, match="unknown built-in"):
        load_documents("builtin:nope")


def test_split_is_disjoint_deterministic_and_seeded() -> None:
    docs = [f"doc {i} " * (i + 10) for i in range(40)]
    ev, cal = split_documents(docs, seed=0)
    assert not {doc_hash(d) for d in ev} & {doc_hash(d) for d in cal}
    assert sorted(ev + cal) == sorted(docs)
    assert split_documents(docs, seed=0) == (ev, cal)
    assert split_documents(docs, seed=1) != (ev, cal)
    frac = sum(map(len, ev)) / sum(map(len, docs))
    assert 0.4 <= frac < 0.5


def test_paragraph_splitter_keeps_small_texts_whole() -> None:
    assert split_paragraph_documents("one\n\ntwo") == ["one\n\ntwo"]


def test_prepare_data_defaults_calibrate_on_a_disjoint_part_of_eval() -> None:
    tok = byte_tokenizer()
    data = prepare_data(tok, "builtin:python-docs", None, eval_tokens=1024, calib_samples=4, window_tokens=256)
    assert data.eval.windows.shape == (4, 256)
    assert data.calib is not None and data.calib.windows.shape == (4, 256)
    assert "disjoint" in data.calib.source
    eval_rows = {tuple(r) for r in data.eval.windows.tolist()}
    assert not eval_rows & {tuple(r) for r in data.calib.windows.tolist()}


def test_same_text_for_calib_and_eval_warns(capsys: pytest.CaptureFixture[str]) -> None:
    prepare_data(byte_tokenizer(), "builtin:python-docs", "builtin:python-docs", 512, 2, 256)
    assert "same text" in capsys.readouterr().err


def test_overlapping_calibration_documents_are_dropped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shared = "shared paragraph " * 200
    (tmp_path / "eval.jsonl").write_text(json.dumps({"text": shared}) + "\n" + json.dumps({"text": "e " * 800}) + "\n")
    (tmp_path / "cal.jsonl").write_text(json.dumps({"text": shared}) + "\n" + json.dumps({"text": "c " * 800}) + "\n")
    data = prepare_data(byte_tokenizer(), str(tmp_path / "eval.jsonl"), str(tmp_path / "cal.jsonl"), 512, 4, 128)
    assert "also appear in the eval set" in capsys.readouterr().err
    assert data.calib is not None and data.calib.documents == 1


def test_too_short_eval_text_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "short.txt").write_text("just a few words")
    with pytest.raises(LowbitError, match="fewer than one window"):
        prepare_data(byte_tokenizer(), str(tmp_path / "short.txt"), None, 512, 1, 512)


def test_windows_are_deterministic() -> None:
    a = prepare_data(byte_tokenizer(), "builtin:python-docs", None, 512, 3, 128, seed=5)
    b = prepare_data(byte_tokenizer(), "builtin:python-docs", None, 512, 3, 128, seed=5)
    assert a.eval.sha256 == b.eval.sha256 and a.calib.sha256 == b.calib.sha256  # type: ignore[union-attr]


def test_quantize_calibration_defaults_to_compares_calibration_part() -> None:
    from lowbit.data import prepare_calibration

    tok = byte_tokenizer()
    assert prepare_calibration(tok, None, 4, 128).sha256 == prepare_data(tok, calib_samples=4, window_tokens=128,
                                                                          eval_tokens=128).calib.sha256  # type: ignore[union-attr]


def test_user_calibration_text_is_used_whole(text_file: Path) -> None:
    from lowbit.data import prepare_calibration

    cal = prepare_calibration(byte_tokenizer(), str(text_file), 10_000, 128)
    assert cal.documents == len(load_documents(str(text_file)))
    with pytest.raises(LowbitError, match="shorter than one window"):
        (text_file.parent / "tiny.txt").write_text("few words")
        prepare_calibration(byte_tokenizer(), str(text_file.parent / "tiny.txt"), 4, 128)
