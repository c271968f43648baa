"""The llama.cpp check of the export: every written GGUF runs in llama.cpp (llama-cpp-python, optional
extra `gguf-run`), each file in a process of its own.

llama.cpp's CPU kernels differ by instruction set (AVX2, AVX-512, AMX ...), and a fault in one of
them kills the process that loaded the file with a signal no Python code can catch. Running each file
in a child process turns such a crash into a result: which file, which signal, where it was (loading
the model, or which prompt), the machine's CPU features and the llama-cpp-python version - recorded in
export_check.json, the card and the Modelfile, instead of the export job dying with the file unchecked.

The child (`python -m loraflow.ship.llama_check IN OUT PROGRESS`) only runs llama.cpp: it is given the
prompts and their token ids as the run's tokenizer makes them, and returns llama.cpp's own token ids for
the prompt texts and its greedy answers. Everything is compared in the parent, against transformers'
greedy answers from the same file, with the export's near-tie rule.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loraflow.ship.agreement import agreement, agreement_outside_ties

CHILD = [sys.executable, "-m", "loraflow.ship.llama_check"]
# the CPU features llama.cpp picks its kernels by (x86 and Arm); the card lists those the machine has
CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
    "asimd",
    "asimddp",
    "sve",
    "sve2",
    "i8mm",
    "bf16",
)
INSTALL_HINT = "install the optional extra: pip install 'loraflow[gguf-run]'"
TIMEOUT_S = 3600


def available() -> tuple[bool, str]:
    """Whether llama-cpp-python is installed (found without loading llama.cpp into this process)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return False, f"llama-cpp-python is not installed; {INSTALL_HINT}"
    return True, ""


def runtime_version() -> str | None:
    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """CPU model and the CPU_FLAGS it has (from /proc/cpuinfo where there is one)."""
    model, flags = platform.processor() or platform.machine(), set()
    path = Path(cpuinfo)
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model") and value.strip():
                model = value.strip()
            elif key in ("flags", "features"):
                flags |= set(value.split())
    return {"cpu": model, "arch": platform.machine(), "cpu_flags": [f for f in CPU_FLAGS if f in flags]}


# ---------------------------------------------------------------------------------------------
# parent side
# ---------------------------------------------------------------------------------------------


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class PromptSet:
    """The test prompts, their token ids as the run's tokenizer makes them, the stop tokens and how many
    tokens a greedy answer may take."""

    texts: list[str]
    encoded: list[list[int]]
    stops: list[int]
    new_tokens: int


def run_file(
    gguf_path: Path,
    prompts: PromptSet,
    threads: int | None = None,
    repack: bool = True,
    command: list[str] | None = None,
    timeout_s: float = TIMEOUT_S,
) -> dict:
    """Run one GGUF in a child process. {"completed": True, ...child's output} or, when the child died,
    {"completed": False, "crash": {signal or exit code, last step, stderr tail}}. repack=False: without
    llama.cpp's extra buffer types (weight repacking for the CPU's kernels, AMX included; llama-server's
    --no-repack)."""
    with tempfile.TemporaryDirectory(prefix="loraflow-llama-") as tmp:
        inp, out, progress = (Path(tmp) / n for n in ("in.json", "out.json", "progress.txt"))
        inp.write_text(
            json.dumps(
                {
                    "gguf": str(gguf_path),
                    "prompts": prompts.texts,
                    "encoded": prompts.encoded,
                    "new_tokens": prompts.new_tokens,
                    "stops": prompts.stops,
                    "threads": threads or _cpus(),
                    "repack": repack,
                }
            ),
            encoding="utf-8",
        )
        try:
            proc = subprocess.run(
                [*(command or CHILD), str(inp), str(out), str(progress)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
            code, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as err:
            code, stderr = (
                None,
                (err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else err.stderr or ""),
            )
        last = progress.read_text(encoding="utf-8").splitlines()[-1:] if progress.is_file() else []
        if code == 0 and out.is_file():
            return {"completed": True, **json.loads(out.read_text(encoding="utf-8"))}
    crash = {
        "exit_code": code,
        "last_step": last[0] if last else "before loading the model",
        "stderr_tail": "\n".join(stderr.strip().splitlines()[-8:]),
    }
    if code is None:
        crash["what"] = f"no answer within {timeout_s:.0f} s (stopped)"
    elif code < 0:
        crash["signal"] = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        crash["what"] = f"killed by {crash['signal']}"
    else:
        crash["what"] = f"exited with code {code}"
    return {"completed": False, "crash": crash}


def score(
    raw: dict,
    encoded: list[list[int]],
    reference: list[list[int]],
    stops: list[int],
    parted: list[dict],
    min_agreement: float,
    tie_margin: float,
) -> dict:
    """llama.cpp's answers on one file against transformers' (`reference`, same file). `parted`: where
    the answers part and the transformers model's margin there (export_check.divergences)."""
    import math

    answers, n = raw["answers"], len(reference)
    agreeing = sum(a == b for a, b in zip(answers, reference))
    ended = [bool(a) and a[-1] in stops for a in answers]
    ref_stopped = [bool(r) and r[-1] in stops for r in reference]
    res = {
        "prompts": n,
        "prompt_tokens_same": sum(a == b for a, b in zip(raw["prompt_ids"], encoded)),
        "agreement": agreement(answers, reference),
        "agreeing_prompts": agreeing,
        "agreement_outside_ties": agreement_outside_ties(n, agreeing, parted, tie_margin),
        "tie_margin": tie_margin,
        "divergences": parted,
        "stopped_where_transformers_stopped": sum(a == b for a, b in zip(ended, ref_stopped)),
        "transformers_stopped": sum(ref_stopped),
        "stop_tokens_are_eog": raw["stop_tokens_are_eog"],
    }
    res["passed"] = bool(
        res["prompt_tokens_same"] == n
        and res["agreement_outside_ties"] >= min_agreement
        and all(res["stop_tokens_are_eog"].values())
        and res["stopped_where_transformers_stopped"] >= math.ceil(min_agreement * n)
    )
    return res


def answered(entry: dict) -> dict | None:
    """The run of a file that gave answers: as run, or (after a crash) without repacking; None if neither."""
    run = entry if entry["completed"] else entry.get("without_repack")
    return run if run is not None and run["completed"] else None


def summarize(per_file: dict[str, dict], mode: str, ollama_file: str | None) -> dict:
    """check["llama_cpp"]: the per-file results with the runtime and machine. A crash fails the check
    under export.llama_cpp: require; under auto it is reported (the transformers checks of the file
    passed, so the fault is the runtime's on this machine), and wrong answers fail either way."""
    crashed = [k for k, e in per_file.items() if not e["completed"]]
    wrong = [k for k, e in per_file.items() if (r := answered(e)) is not None and not r["passed"]]
    return {
        "ran": True,
        "mode": mode,
        "runtime": f"llama-cpp-python {runtime_version() or '?'}",
        "machine": machine(),
        "files": per_file,
        "crashed": crashed,
        "wrong": wrong,
        "ollama_file_crashed": ollama_file in crashed,
        "passed": not wrong and not (crashed and mode == "require"),
    }


def crash_line(entry: dict, lc: dict) -> str:
    """One sentence on a crashed file: what, where, runtime and the machine's CPU features."""
    c, m = entry["crash"], lc["machine"]
    return (
        f"{entry['file']} {c['what']} in {lc['runtime']} ({c['last_step']}) on {m['cpu']} "
        f"[{' '.join(m['cpu_flags']) or 'no listed CPU features'}]"
    )


def _retry_text(retry: dict | None) -> str:
    if retry is None:
        return ""
    if not retry["completed"]:
        return f"; without weight repacking (--no-repack) too: {retry['crash']['what']}"
    return (
        "; without weight repacking (llama.cpp's extra buffer types, llama-server --no-repack) it runs: answers "
        f"agree on {retry['agreeing_prompts']}/{retry['prompts']} prompts ({retry['agreement_outside_ties']:.0%} "
        f"counting near ties, margin < {retry['tie_margin']:.3g}), {'passed' if retry['passed'] else 'FAILED'}"
    )


def describe(check: dict, ollama_gguf: str | None = None) -> list[str]:
    """What was checked on each file, with which runtime, and the result (for the Modelfile header and
    the card): one line per file, then the llama.cpp runtime and machine, and a warning when the file
    Ollama is pointed at crashed llama.cpp."""
    lc, out = check.get("llama_cpp") or {}, []
    for kind, t in check["types"].items():
        line = f"{t['file']}: transformers (GGUF loader) " + (
            f"max |logit diff| {t['max_abs_logit_diff']:.3g}, within {t['tolerance']:.3g}"
            if "tolerance" in t
            else f"greedy answers agree on {t['agreement_outside_ties']:.0%} of {check['prompts']} test prompts"
        )
        e = (lc.get("files") or {}).get(kind)
        if not lc.get("ran") or e is None:
            line += f"; llama.cpp not run ({lc.get('reason', 'n/a')})"
        elif e["completed"]:
            line += (
                f"; llama.cpp answers agree with transformers on {e['agreeing_prompts']}/{e['prompts']} prompts "
                f"({e['agreement_outside_ties']:.0%} counting near ties, margin < {e['tie_margin']:.3g}): "
                f"{'passed' if e['passed'] else 'FAILED'}"
            )
        else:
            line += f"; llama.cpp CRASHED: {e['crash']['what']} ({e['crash']['last_step']})" + _retry_text(
                e.get("without_repack")
            )
        out.append(line)
    if lc.get("ran"):
        m = lc["machine"]
        out.append(
            f"llama.cpp runtime: {lc['runtime']}, each file in its own process, on {m['cpu']} "
            f"[{' '.join(m['cpu_flags']) or 'no listed CPU features'}]"
        )
        if ollama_gguf and any(not e["completed"] and e["file"] == ollama_gguf for e in lc["files"].values()):
            out.append(
                f"WARNING: {ollama_gguf}, the file this Modelfile uses, crashed llama.cpp on the machine that "
                "exported it; Ollama runs llama.cpp too. Choose another file with export.ollama_file."
            )
    return out


# ---------------------------------------------------------------------------------------------
# child side
# ---------------------------------------------------------------------------------------------


def _child(inp: str, out: str, progress: str) -> None:
    def step(text: str) -> None:
        with open(progress, "a", encoding="utf-8") as fh:  # flushed per step: survives a crash of this process
            fh.write(text + "\n")

    job = json.loads(Path(inp).read_text(encoding="utf-8"))
    step("importing llama_cpp")
    import llama_cpp
    from llama_cpp import Llama

    if not job.get("repack", True):
        import llama_cpp.llama_cpp as bindings  # what Llama() builds its model parameters from

        defaults = bindings.llama_model_default_params

        def no_repack():  # Llama() takes no such argument
            params = defaults()
            params.use_extra_bufts = False
            return params

        bindings.llama_model_default_params = no_repack
    step("loading the model")
    encoded, new_tokens = job["encoded"], job["new_tokens"]
    llm = Llama(
        model_path=job["gguf"],
        n_ctx=max(map(len, encoded)) + new_tokens + 8,
        n_batch=512,
        seed=0,
        verbose=False,
        n_threads=job["threads"],
    )
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    is_eog = lambda t: bool(llama_cpp.llama_vocab_is_eog(vocab, int(t)))  # noqa: E731
    prompt_ids, answers = [], []
    for i, (text, ids) in enumerate(zip(job["prompts"], encoded)):
        step(f"generating for test prompt {i}")
        prompt_ids.append(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        toks: list[int] = []
        for t in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            toks.append(int(t))
            if is_eog(t) or len(toks) >= new_tokens:
                break
        answers.append(toks)
    system = llama_cpp.llama_print_system_info()
    result = {
        "prompt_ids": prompt_ids,
        "answers": answers,
        "stop_tokens_are_eog": {str(s): is_eog(s) for s in job["stops"]},
        "system_info": system.decode() if isinstance(system, bytes) else str(system),
    }
    Path(out + ".tmp").write_text(json.dumps(result), encoding="utf-8")
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    _child(*sys.argv[1:4])
