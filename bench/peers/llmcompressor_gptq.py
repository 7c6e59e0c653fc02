"""llm-compressor's GPTQ on lowbit's own calibration windows, for a same-split comparison.

Runs in a scratch venv (never a lowbit dependency):

    python -m venv /tmp/peer && /tmp/peer/bin/pip install torch==2.13.0 llmcompressor==0.14.0
    PYTHONPATH=src /tmp/peer/bin/python bench/peers/llmcompressor_gptq.py --out /tmp/peer-w4g64 \\
        [--group 64 | --group 0 (per channel)] [--actorder static|group|none]
    .venv/bin/lowbit eval --model /tmp/peer-w4g64 --reference smollm2-135m --json bench/results/peer_....json

It quantizes the bundled SmolLM2-135M with GPTQModifier (int4 symmetric, minmax
observer, damp 0.01, the library's defaults otherwise) on exactly the 64 × 512
calibration windows `lowbit compare` uses, then writes the *dequantized* float
weights as a plain model folder, so lowbit scores it on the same eval windows
against the same float reference as its own variants.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--group", type=int, default=64, help="group size; 0 = per output channel")
    p.add_argument("--actorder", default="static", choices=["static", "group", "none"])
    p.add_argument("--calib-samples", type=int, default=64)
    args = p.parse_args()

    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier

    from lowbit.data import prepare_data
    from lowbit.models import load_model

    loaded = load_model("smollm2-135m")
    data = prepare_data(loaded.tokenizer, eval_tokens=16384, calib_samples=args.calib_samples)
    windows = data.calib.windows
    ds = Dataset.from_dict({"input_ids": windows.tolist(), "attention_mask": torch.ones_like(windows).tolist()})
    weights = QuantizationArgs(num_bits=4, type="int", symmetric=True,
                               strategy="group" if args.group else "channel",
                               group_size=args.group or None,
                               actorder=None if args.actorder == "none" else args.actorder)
    recipe = GPTQModifier(config_groups={"group_0": QuantizationScheme(targets=["Linear"], weights=weights)},
                          ignore=["lm_head"], dampening_frac=0.01)
    start = time.perf_counter()
    oneshot(model=loaded.model, dataset=ds, recipe=recipe, max_seq_length=windows.shape[1],
            num_calibration_samples=windows.shape[0])
    seconds = time.perf_counter() - start
    out = Path(args.out)
    # Fake-quantized weights in place: save them as plain float tensors.
    plain = {k: v.detach().clone() for k, v in loaded.model.state_dict().items()
             if not k.endswith(("_scale", "_zero_point", "_g_idx", "weight_shape"))}
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    cfg = loaded.model.config.to_dict()
    cfg.pop("quantization_config", None)
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    loaded.tokenizer.save_pretrained(out)
    save_file({k: v.contiguous() for k, v in plain.items() if "lm_head" not in k or not cfg.get("tie_word_embeddings")},
              str(out / "model.safetensors"))
    (out / "peer_run.json").write_text(json.dumps({
        "peer": "llmcompressor 0.14.0 GPTQModifier", "group": args.group, "actorder": args.actorder,
        "calib_windows": list(windows.shape), "calib_sha256": data.calib.sha256, "seconds": seconds}, indent=1))
    print(f"peer GPTQ done in {seconds:.1f} s → {out}")


if __name__ == "__main__":
    main()
