"""``archer export CKPT_DIR --out DIR``: merge a sharded checkpoint into one Hugging Face checkpoint.

Reads the ``config.json`` that :func:`archer.distributed.checkpoint.save_sharded` stored next to the
shards, builds the model on the CPU from that config (``AutoModelForCausalLM.from_config``), fills it
from every rank's shard in one process (DCP reassembles the slices, whatever world size saved them)
and writes ``save_pretrained`` safetensors plus any tokenizer files found in the checkpoint. The
result loads with ``AutoModelForCausalLM.from_pretrained(DIR)`` on any machine, no torch.distributed.

Limits: the whole model must fit in host memory once; optimizer state is not exported.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from archer.distributed.checkpoint import load_full_model_state, read_meta

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "added_tokens.json",
)


def export_checkpoint(ckpt_dir: str | Path, out_dir: str | Path, dtype: str | None = None) -> Path:
    """Write the sharded checkpoint ``ckpt_dir`` as a Hugging Face checkpoint in ``out_dir``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    meta = read_meta(ckpt_dir)  # a clear error for a directory that is not an archer checkpoint
    prefix = str(meta.get("extra", {}).get("prefix", ""))  # the trainer saves its wrapper's names
    if not (ckpt_dir / "config.json").is_file():
        raise FileNotFoundError(f"{ckpt_dir} has no config.json; save with a Hugging Face model to export it")
    config = AutoConfig.from_pretrained(ckpt_dir)
    model = AutoModelForCausalLM.from_config(config)
    template = {prefix + k: v for k, v in model.state_dict().items()}
    state = {k[len(prefix) :]: v for k, v in load_full_model_state(ckpt_dir, template).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k not in _tied_keys(model)]:
        raise RuntimeError(f"checkpoint does not match its config: missing={missing} unexpected={unexpected}")
    if dtype is not None:
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"--dtype {dtype!r} is not a torch dtype (e.g. float32, bfloat16, float16)")
        model = model.to(getattr(torch, dtype))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    for name in TOKENIZER_FILES:
        if (ckpt_dir / name).is_file():
            shutil.copy2(ckpt_dir / name, out_dir / name)
    return out_dir


def _tied_keys(model) -> set[str]:
    keys = getattr(model, "_tied_weights_keys", None) or []
    return set(keys if isinstance(keys, (list, tuple, set)) else dict(keys))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="archer export", description="merge a sharded checkpoint into one Hugging Face checkpoint"
    )
    parser.add_argument("ckpt_dir", help="sharded checkpoint directory (written by save_sharded)")
    parser.add_argument("--out", required=True, help="output directory for the Hugging Face checkpoint")
    parser.add_argument("--dtype", default=None, help="cast before saving (float32, bfloat16, float16)")
    args = parser.parse_args(argv)
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()  # one line of output, not shard bars
    except (ImportError, AttributeError):
        pass
    try:
        out = export_checkpoint(args.ckpt_dir, args.out, dtype=args.dtype)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"archer export: {exc}", file=sys.stderr)
        return 1
    print(f"wrote Hugging Face checkpoint to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
