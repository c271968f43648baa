"""Training checkpoints that survive a kill and never resume the wrong run.

A checkpoint lives outside Snakemake's outputs (results/checkpoints/<run>/), is written atomically
(temporary directory, then rename) and carries a fingerprint of the run's hyperparameters, token
data files and base weights; a checkpoint with another fingerprint is discarded, not resumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import torch

from loraflow.io import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)


def fingerprint(hparams: dict, *data_files: str) -> str:
    """The run's hyperparameters, the bytes of its data files (e.g. the token cache's meta.json) and its
    base weights' names, sizes and modification times."""
    digest = hashlib.sha256(json.dumps(hparams, sort_keys=True, default=str).encode())
    for path in data_files:
        digest.update(Path(path).read_bytes())
    for weights in sorted(Path(hparams["model_dir"]).glob("*.safetensors")):
        stat = weights.stat()
        digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


class Checkpointer:
    def __init__(self, directory: str, hparams: dict, *data_files: str):
        self.dir = Path(directory)
        self.fingerprint = fingerprint(hparams, *data_files)

    def save(self, model, optimizer, scheduler, state: dict, best_state: dict | None) -> None:
        from safetensors.torch import save_file

        trainable = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        with atomic_dir(self.dir) as tmp:
            save_file(trainable, tmp / "trainable.safetensors")
            if best_state is not None:
                save_file({k: v.contiguous() for k, v in best_state.items()}, tmp / "best.safetensors")
            rng: dict[str, torch.Tensor | list[torch.Tensor]] = {"torch": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng["cuda"] = torch.cuda.get_rng_state_all()
            torch.save(
                {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng},
                tmp / "optimizer.pt",
            )
            write_json(tmp / "state.json", {**state, "fingerprint": self.fingerprint})
        log.info("checkpoint at step %d -> %s", state["step"], self.dir)

    def load(self, model, optimizer, scheduler) -> tuple[dict, dict | None] | None:
        """Restore model/optimizer/scheduler/RNG; returns (loop state, best adapter state) or None."""
        from safetensors.torch import load_file

        if not (self.dir / "state.json").is_file():
            return None
        state = read_json(self.dir / "state.json")
        if state.pop("fingerprint") != self.fingerprint:
            log.warning("discarding checkpoint %s: it belongs to other settings or data", self.dir)
            self.clear()
            return None
        trainable = load_file(self.dir / "trainable.safetensors")
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in trainable:
                    p.copy_(trainable[name])
        extra = torch.load(self.dir / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        torch.set_rng_state(extra["rng"]["torch"])
        if "cuda" in extra["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(extra["rng"]["cuda"])
        best = self.dir / "best.safetensors"
        return state, (load_file(best) if best.is_file() else None)

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
