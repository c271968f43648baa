"""Run `llamafactory-cli` in this process and record its peak memory, for bench_vs_llamafactory.py.

    python benchmarks/llamafactory_run.py STATS.json train lf_train.yaml key=value ...

Everything after STATS.json goes to LLaMA-Factory's own command line (llamafactory.cli.main). With one
device (or none) LLaMA-Factory trains in this process, so at exit STATS.json gets:
  max_rss_mb    the process's peak resident set (what GNU time reports as its maximum RSS);
  peak_gpu_mb   on CUDA, torch.cuda.max_memory_allocated: the figure loraflow's train_stats.json
                reports there (peak_memory_mb), so the two tools' GPU memory compare like with like.
"""

from __future__ import annotations

import json
import resource
import sys


def main() -> None:
    stats, sys.argv = sys.argv[1], ["llamafactory-cli", *sys.argv[2:]]
    from llamafactory.cli import main as llamafactory_main

    try:
        llamafactory_main()
    finally:
        import torch

        out = {
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cuda": torch.cuda.is_available(),
        }
        if torch.cuda.is_available():
            out.update(peak_gpu_mb=torch.cuda.max_memory_allocated() / 2**20, gpu=torch.cuda.get_device_name())
        with open(stats, "w", encoding="utf-8") as fh:
            json.dump(out, fh)


if __name__ == "__main__":
    main()
