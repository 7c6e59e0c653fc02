"""Tiny seeded models built from a config in code, for tests and smoke runs.

Shapes are multiples of 256 where it matters so that every scheme's real path
(including GGUF k-quants) is exercised; the tokenizer is byte-level with no
merges, built in code, so nothing is downloaded.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from lowbit.errors import LowbitError

EOS = "<|endoftext|>"


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A 257-token byte-level tokenizer (256 bytes + end-of-text)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab[EOS] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS)
    fast.model_max_length = 1 << 20
    return fast


def _llama(vocab: int) -> PreTrainedModel:
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=vocab - 1,
        bos_token_id=vocab - 1,
    )
    return LlamaForCausalLM(cfg)


def _gpt2(vocab: int) -> PreTrainedModel:
    cfg = GPT2Config(vocab_size=vocab, n_embd=128, n_layer=2, n_head=4, n_positions=1024,
                     eos_token_id=vocab - 1, bos_token_id=vocab - 1)
    return GPT2LMHeadModel(cfg)


def _bert(vocab: int) -> PreTrainedModel:
    cfg = BertConfig(vocab_size=vocab, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=256, max_position_embeddings=1024)
    return BertModel(cfg)


TINY_BUILDERS = {"tiny-llama": _llama, "tiny-gpt2": _gpt2, "tiny-bert": _bert}


def build_tiny(name: str, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Build the tiny model ``name`` with weights drawn from ``seed``.

    Default initialisers (std 0.02) give near-uniform predictions; the weights
    are rescaled so the model is confident enough that quantization error shows
    up in KL divergence.
    """
    if name not in TINY_BUILDERS:
        raise LowbitError(f"unknown tiny model '{name}'; available: {', '.join(TINY_BUILDERS)}")
    tok = byte_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TINY_BUILDERS[name](len(tok))
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.mul_(4.0)  # std 0.08: outputs far from uniform, still stable
    model.eval()
    return model, tok
