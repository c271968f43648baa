"""Where the train job's memory goes: resident memory (RSS) phase by phase through one optimizer step.

A sampler thread reads the process's RSS every few milliseconds; each phase reports its own peak and
what it added. Phases: interpreter + libraries, tokenizer + token cache, base weights, LoRA wrap +
optimizer, the step's forward/backward passes (activations, logits / loss buffers), the optimizer
step (AdamW states), a validation pass (evaluation buffers), and at the end the RSS that stays
resident beyond the live tensors (allocator retention / fragmentation).

--src points at another checkout's src/ to measure an older loop the same way (its modeling.collate +
supervised_loss over the padded micro-batch): before/after from one script.

    .venv/bin/python benchmarks/memory_breakdown.py --results results [--batch-size 4 --grad-accum 4]
        [--src /path/to/old/src] [--precision auto] [--max-length 512]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Sampler:
    def __init__(self):
        self.peak = rss_mb()
        self.rows: list[tuple[str, float, float]] = []
        self.last = rss_mb()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.002)

    def phase(self, name: str) -> None:
        now = rss_mb()
        self.peak = max(self.peak, now)
        self.rows.append((name, self.peak, now))
        self.peak = now

    def report(self) -> None:
        print(f"{'phase':42s}{'peak MB':>10s}{'after MB':>10s}{'peak - before':>15s}")
        for i, (name, peak, after) in enumerate(self.rows):
            prev = self.rows[i - 1][2] if i else 0.0
            print(f"{name:42s}{peak:>10,.0f}{after:>10,.0f}{peak - prev:>+15,.0f}")
        self._stop = True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", required=True, help="a results dir with base_model/ and tokens/")
    ap.add_argument("--src", default=str(REPO / "src"))
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=4)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--max-length", type=int, default=512, help="tokenize.max_length of the token cache")
    ap.add_argument("--packing", type=int, default=1)
    ap.add_argument("--tokens-per-forward", type=int, default=0)
    args = ap.parse_args()
    sampler = Sampler()
    sys.path.insert(0, args.src)
    import numpy as np
    import torch

    try:  # the model plumbing as one namespace, whatever modules it is split into
        from loraflow.model import batching, loading
        from loraflow.model import device as devices
        from loraflow.model import loss as losses

        modeling = types.SimpleNamespace(**{**vars(batching), **vars(devices), **vars(loading), **vars(losses)})
    except ImportError:  # an older checkout (--src): one modeling module
        try:
            from loraflow.model import modeling
        except ImportError:  # older still: the flat package
            from loraflow import modeling
    from loraflow.data.tokenization import load_split
    from loraflow.model.methods import load_base, make_optimizer, trainable_model

    new = hasattr(modeling, "forward_batches")
    sampler.phase("python + torch/transformers/peft imports")
    res = Path(args.results)
    model_dir = str(res / "base_model")
    tok = modeling.load_tokenizer(model_dir)
    train = load_split(str(res / "tokens" / "train.npz"), str(res / "tokens" / "meta.json"), model_dir)
    val = load_split(str(res / "tokens" / "val.npz"), str(res / "tokens" / "meta.json"), model_dir)
    sampler.phase("tokenizer + token cache")
    device = torch.device("cpu")
    amp = modeling.training_precision(args.precision, device)
    dtype = modeling.train_weight_dtype(amp) if hasattr(modeling, "train_weight_dtype") else None
    model = (
        load_base(model_dir, device, "lora", dtype=dtype) if dtype is not None else load_base(model_dir, device, "lora")
    )
    gc.collect()
    sampler.phase("base weights (load)")
    model = trainable_model(model, "lora", 8, 16, "qv", 0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer("lora", params, 2e-4, 0.0, device)
    model.train()
    sampler.phase("LoRA wrap + optimizer")
    batches = modeling.length_grouped_batches(
        [len(i) for i, _ in train], args.batch_size, np.random.default_rng([42, 0])
    )
    # the micro-batches of one step, longest first (the worst step)
    step = sorted(batches[: 4 * args.grad_accum], key=lambda b: -max(len(train[i][0]) for i in b))[: args.grad_accum]
    n_target = sum(int(train[i][1][1:].sum()) for b in step for i in b)
    max_length = args.max_length
    for b in step:
        ex = [train[i] for i in b]
        if new:
            passes = modeling.forward_batches(
                ex,
                tok.pad_token_id,
                device,
                bool(args.packing),
                max_length,
                modeling.forward_tokens(
                    args.tokens_per_forward, bool(args.packing), args.batch_size, max_length, device
                ),
            )
        else:
            passes = [modeling.collate(ex, tok.pad_token_id, device)]
        for batch in passes:
            with modeling.autocast(amp, device):
                loss, _ = modeling.supervised_loss(model, batch)
            (loss / n_target).backward()
            del loss, batch
    sampler.phase(f"forward+backward of one step ({'new' if new else 'old'} loop, {amp})")
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sampler.phase("optimizer step (AdamW states)")
    kw = {"precision": amp} if new else {}
    modeling.mean_loss(model, val, args.batch_size * 2, tok.pad_token_id, device, **kw)
    sampler.phase("validation pass")
    gc.collect()
    live = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    live += sum(
        s.numel() * s.element_size() for st in optimizer.state.values() for s in st.values() if torch.is_tensor(s)
    )
    sampler.phase("after gc")
    sampler.report()
    now = rss_mb()
    print(
        f"live tensors (weights, buffers, optimizer states): {live / 2**20:,.0f} MB; resident now {now:,.0f} MB; "
        f"peak RSS (ru_maxrss) {modeling.peak_memory_mb(device):,.0f} MB"
    )


if __name__ == "__main__":
    main()
