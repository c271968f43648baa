"""GPU LoRA training throughput and model FLOPs utilisation (MFU), the way loraflow trains.

One LoRA step (r=8 on q_proj,v_proj) = loraflow's own forward (model.loss.supervised_loss: LM head and
loss only on supervised positions) + backward + fused AdamW, bf16 weights, SDPA attention, on
batches of real-length sequences. Two models: the default SmolLM2-135M (results/base_model, or its
config alone with --random-weights) and a larger Llama built from a config (default 1.3B-class:
hidden 2048, 24 layers). Prints tokens/s and MFU for each.

FLOPs accounting (per token, N = parameters in the matmuls of the decoder + head, L layers, T
sequence length, d hidden): forward 2N + 4·L·T·d (attention scores and values, causal: half of
the full 4·L·T·d·2 is skipped by flash kernels, we count the full figure as is customary), backward
of a frozen base = activation gradients only = the same again (no weight gradients; LoRA's own are
negligible). So a LoRA step costs ~2x the forward, not the 3x of full fine-tuning, and MFU is
achieved FLOP/s over the device's dense bf16 peak (H100 SXM 989 TFLOP/s; pass --peak-tflops for
another part). The head is charged only at supervised positions (the fraction --supervised).

    python benchmarks/bench_gpu_mfu.py                   # on a GPU
    python benchmarks/bench_gpu_mfu.py --device cpu --steps 2 --batch 2 --seq 128 --big-layers 2   # smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def device_peak(name: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def flops_per_token(config, seq: int, supervised: float) -> float:
    """Forward FLOPs per token (matmuls + attention), LM head only on the supervised share."""
    d, layers, inter, vocab = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    kv = d * config.num_key_value_heads // config.num_attention_heads
    per_layer = 2 * (d * d + 2 * d * kv + d * d + 3 * d * inter)  # q, k, v, o, gate/up/down
    attention = 4 * seq * d  # QK^T and AV, per layer per token (full, not causal-halved)
    head = 2 * d * vocab * supervised
    return layers * (per_layer + attention) + head


def build(config, device, dtype, random_weights: bool, model_dir: str | None):
    import torch
    from transformers import AutoModelForCausalLM

    from loraflow.model.methods import trainable_model

    if model_dir and not random_weights:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
    else:
        config._attn_implementation = "sdpa"
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return trainable_model(model.to(device), "lora", 8, 16, ["q_proj", "v_proj"], 0.0)


def bench(name, config, args, model_dir=None) -> dict:
    import torch

    from loraflow.model.loss import supervised_loss

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build(config, device, dtype, args.random_weights, model_dir)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=g).to(device)
    labels = torch.zeros_like(ids, dtype=torch.bool)
    labels[:, int(args.seq * (1 - args.supervised)) :] = True
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels_mask": labels}
    model.train()

    def step(net, opt) -> None:  # arguments, not the closure, so that `del` below frees them
        loss, n = supervised_loss(net, batch)
        (loss / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step(model, optimizer)
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step(model, optimizer)
    sync()
    seconds = time.perf_counter() - start
    tokens = args.steps * args.batch * args.seq
    tok_s = tokens / seconds
    achieved = 2 * flops_per_token(config, args.seq, args.supervised) * tok_s  # forward + activation backward
    peak = args.peak_tflops or (device_peak(torch.cuda.get_device_name()) if device.type == "cuda" else None)
    out = {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "dtype": str(dtype),
        "tokens_per_s": tok_s,
        "achieved_tflops": achieved / 1e12,
        "peak_tflops": peak,
        "mfu_pct": 100 * achieved / (peak * 1e12) if peak else None,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }
    mfu = f"{out['mfu_pct']:.1f} %" if peak else "n/a (no peak figure for this device)"
    print(
        f"{name:28s} {out['params'] / 1e6:8.0f} M params  {tok_s:10.0f} tokens/s  {achieved / 1e12:7.1f} TFLOP/s  MFU "
        f"{mfu}",
        flush=True,
    )
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model-dir", default=str(REPO / "results" / "base_model"))
    ap.add_argument(
        "--random-weights", action="store_true", help="build the default model from its config (no weights needed)"
    )
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--supervised", type=float, default=0.5, help="share of positions with a loss (assistant tokens)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--big-layers", type=int, default=24)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--json-out", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()

    import torch
    from transformers import AutoConfig, LlamaConfig

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --device cpu for a smoke test")
    if args.device == "cuda":
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    model_dir = args.model_dir if Path(args.model_dir, "config.json").is_file() else None
    small = (
        AutoConfig.from_pretrained(model_dir)
        if model_dir
        else LlamaConfig(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            tie_word_embeddings=True,
            max_position_embeddings=8192,
        )
    )  # SmolLM2-135M's shape
    big = LlamaConfig(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=args.big_layers,
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=4096,
    )
    results = [
        bench("SmolLM2-135M (default)", small, args, model_dir),
        bench(f"Llama {args.big_layers}x2048 (config)", big, args),
    ]
    print(json.dumps(results, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
