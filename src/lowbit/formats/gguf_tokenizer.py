"""Tokenizer metadata (``tokenizer.ggml.*``) for GGUF files.

Two sources, best first:

* the GGUF file the model came from (the bundled SmolLM2, or any ``.gguf`` a
  user loaded): every ``tokenizer.*`` key is copied as it is, so llama.cpp
  tokenizes exactly as with the original file;
* a Hugging Face fast tokenizer with a byte-level BPE model (GPT-2, Llama 3,
  SmolLM, Qwen …): tokens in id order, token types, merges and special ids,
  as ``convert_hf_to_gguf.py``'s ``_set_vocab_gpt2`` writes them. The
  pre-tokenizer is recorded as ``default``: lowbit does not reproduce
  convert_hf_to_gguf's hash table of known pre-tokenizers, so llama.cpp may
  split some text differently from transformers (token ids fed directly are
  unaffected). SentencePiece/Unigram vocabularies are refused with a clear
  error.

A byte-level vocabulary with no merges at all (lowbit's tiny test models) is
written with an *empty* merges array: llama.cpp refuses a BPE vocabulary
without the key, and transformers rejects any merge whose parts are not in
the vocabulary, so no placeholder would do. The ``gguf`` writer refuses empty
arrays, hence :class:`Writer`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lowbit.errors import LowbitError

# gguf TokenType values
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED = 1, 2, 3, 4, 5


def copy_tokenizer_kv(writer: Any, source: Path) -> int:
    """Copy every ``tokenizer.*`` key of the GGUF file ``source`` into ``writer``; returns how many."""
    import gguf

    from lowbit.formats.gguf_reader import open_gguf

    reader = open_gguf(source)
    n = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, list(field.contents()), vtype, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), vtype)
        n += 1
    return n


def general_kv(source: Path) -> dict[str, Any]:
    """Descriptive ``general.*`` strings of a source GGUF (name, license …) worth carrying over."""
    from lowbit.formats.gguf_reader import open_gguf

    reader = open_gguf(source)
    keep = ("general.name", "general.basename", "general.finetune", "general.size_label", "general.license",
            "general.organization")
    return {k: str(reader.fields[k].contents()) for k in keep if k in reader.fields}


def writer_class() -> Any:
    """``gguf.GGUFWriter`` that can also write an empty array of a declared element type."""
    import gguf

    class Writer(gguf.GGUFWriter):  # type: ignore[misc]
        def _pack_val(self, val: Any, vtype: Any, add_vtype: bool, sub_type: Any = None) -> bytes:
            if vtype == gguf.GGUFValueType.ARRAY and sub_type is not None and len(val) == 0:
                head = self._pack("I", vtype) if add_vtype else b""
                return head + self._pack("I", sub_type) + self._pack("Q", 0)
            return bytes(super()._pack_val(val, vtype, add_vtype, sub_type))

    return Writer


def hf_tokenizer_kv(writer: Any, tokenizer: Any, n_vocab: int) -> None:
    """Write a byte-level BPE Hugging Face tokenizer as llama.cpp's ``gpt2`` tokenizer model."""
    import gguf

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise LowbitError("GGUF export needs a fast (tokenizers) tokenizer; this model's tokenizer has none")
    spec = json.loads(backend.to_str())
    model = spec.get("model", {})
    text = json.dumps(spec.get("pre_tokenizer")) + json.dumps(spec.get("decoder"))
    if model.get("type") != "BPE" or "ByteLevel" not in text:
        raise LowbitError(f"GGUF export supports byte-level BPE tokenizers (GPT-2/Llama-3 style); this one is "
                          f"{model.get('type')} — convert it with llama.cpp's convert_hf_to_gguf.py instead")
    added = {t.content: t for t in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for i in range(n_vocab):
        tok = backend.id_to_token(i)
        if tok is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        else:
            tokens.append(tok)
            types.append(NORMAL if tok not in added else (CONTROL if added[tok].special else USER_DEFINED))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # add_key_value, not add_token_merges: an empty list must still be written (see Writer)
    writer.add_key_value("tokenizer.ggml.merges", merges, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.STRING)
    for attr, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                      ("unk_token_id", writer.add_unk_token_id), ("pad_token_id", writer.add_pad_token_id)):
        tid = getattr(tokenizer, attr, None)
        if tid is not None and 0 <= int(tid) < n_vocab:
            add(int(tid))
    writer.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        writer.add_chat_template(template)


__all__ = ["copy_tokenizer_kv", "general_kv", "hf_tokenizer_kv", "writer_class"]
