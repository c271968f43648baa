"""loraflow next to LLaMA-Factory 0.9.5 on the same job, same machine, one invocation: prints the ratios.

The job is a side-by-side harness's (--harness or $LORAFLOW_LF_HARNESS: a directory with
loraflow_config.yaml, LLaMA-Factory's lf_train.yaml and lf_predict.yaml, to_alpaca.py, lf_tokens.py and
setup.sh, which installs LLaMA-Factory into --lf-venv): the first --rows rows of --data (default:
zh_medical_dialogue_im.jsonl in $LORAFLOW_DATA_DIR, the Chinese medical set), loraflow's own clean/split, SmolLM2-135M,
LoRA r=8 alpha=16 on q_proj,v_proj, dropout 0, lr 2e-4, batch 4 x accumulation 4, cosine, one epoch,
cutoff 512, greedy decoding of 64 new tokens in batches of 8.

Steps (everything under --work):
  1. loraflow: `snakemake --until split` with the harness's loraflow_config.yaml, then the rest of the
     run up to `evaluate` with train.warmup_steps = ceil(0.1 x optimizer steps) from the real row count
     (robust to whatever the clean stage keeps; the counts used are printed). Figures: train_stats.json
     (tokens_seen / train_time_s, the train process's peak RSS, the preflight estimate), eval.json
     (generation_s).
  2. LLaMA-Factory: the harness's to_alpaca.py and lf_tokens.py (its own token counts of the same rows),
     `llamafactory-cli train` at each --lf-precisions under GNU time (loop time = train_runtime, peak
     RSS = GNU time's maximum resident set), then `llamafactory-cli train lf_predict.yaml` with
     **loraflow's adapter** (so both tools decode the same weights and the greedy text must agree;
     predict_runtime is the figure, as in the harness).
  3. The training reference of benchmarks/bench_training.py (the tuned transformers.Trainer: dynamic
     padding, group_by_length) on 64 rows of the same train split (--trainer-ref; skipped with 0).
  4. Quality at equal steps: the test loss (loraflow's mean NLL over assistant tokens) of loraflow's
     adapter and of LLaMA-Factory's adapter of the same precision, on the same test rows.

On a GPU both tools train and predict on it (LLaMA-Factory with use_cpu=false), memory is the GPU's peak
(torch.cuda.max_memory_allocated in both: benchmarks/llamafactory_run.py records LLaMA-Factory's), and the
tuned-Trainer reference (a CPU benchmark) is skipped; `--eval-precision fp32 --trainer-ref 0` is the GPU
run of benchmarks/RESULTS.md. --lf-python/--lf-pythonpath run an LLaMA-Factory installed without a venv,
and --base-model-dir runs both tools on another model (e.g. the default architecture with random weights).

Compare like with like: loraflow runs at precision auto (bf16 autocast where the CPU has AMX /
AVX512-BF16, else fp32); the ratio that counts is against the LLaMA-Factory column of that precision,
the other column is printed too. Shared machine: the load average is printed before every step.

    .venv/bin/python benchmarks/bench_vs_llamafactory.py [--rows 400] [--lf-precisions same|fp32,bf16]
        [--work lfbench] [--lf-venv ~/.cache/loraflow-peers/llamafactory] [--trainer-ref 64] [--full-eval]
        [--reuse-loraflow] [--reuse-lf-train]
        [--reuse-loraflow-train]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
RUN = "r8_a16_qv"
GNU_TIME = "/usr/bin/time"


def default_data() -> str | None:
    """The medical set in $LORAFLOW_DATA_DIR, where that is set."""
    where = os.environ.get("LORAFLOW_DATA_DIR")
    return str(Path(where) / "zh_medical_dialogue_im.jsonl") if where else None


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load()}] {msg}", flush=True)


def run(
    cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None, time_file: Path | None = None
) -> float:
    """Run `cmd` with its output in `log`; under GNU time (its report in `time_file`) where there is one."""
    if time_file is not None and os.path.exists(GNU_TIME):
        cmd = [GNU_TIME, "-v", "-o", str(time_file), *cmd]
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    if proc.returncode:
        print(log.read_text(encoding="utf-8")[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd[:6])} ... (log {log})")
    return time.perf_counter() - start


def gnu_time(path: Path) -> tuple[float, float]:
    """(wall s, max RSS MB) of a GNU time -v report."""
    d = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.strip().rpartition(": ")
        d[key] = value
    secs = 0.0
    for part in d["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":"):
        secs = secs * 60 + float(part)
    return secs, int(d["Maximum resident set size (kbytes)"]) / 1024


def peak(out: Path, name: str, cuda: bool) -> tuple[float, float]:
    """(wall s, peak memory MB) of a LLaMA-Factory process: on CUDA the GPU's (torch.cuda.max_memory_allocated,
    as loraflow's train_stats.json), else GNU time's maximum RSS where it ran under GNU time, else the process's own."""
    if (out / f"{name}.time").is_file() and not cuda:
        return gnu_time(out / f"{name}.time")
    stats = jload(out / f"{name}.json")
    return float((out / f"{name}.wall").read_text()), stats["peak_gpu_mb"] if cuda else stats["max_rss_mb"]


def jload(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def count_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def loraflow_side(args, work: Path, harness: Path) -> dict:
    data = work / "data.jsonl"
    with open(args.data, encoding="utf-8") as src, open(data, "w", encoding="utf-8") as dst:
        for n, line in enumerate(src):
            if n >= args.rows:
                break
            dst.write(line)
    results = work / "results"
    smk = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(work),
        "--cores",
        str(args.threads or len(os.sched_getaffinity(0))),  # a job's torch threads are capped by --cores
        "--resources",
        "gpu=1",
        "--configfile",
        str(REPO / "config.yaml"),
        str(harness / "loraflow_config.yaml"),
    ]
    config = ["--config", f"results_dir={results}", f"data={{path: {data}}}"]
    # settings of this machine, the same in every call (a config file: --config would turn nested numbers into strings)
    machine = work / "machine.json"
    machine.write_text(
        json.dumps(
            {
                **(
                    {"base_model": {"source": "local", "path": str(Path(args.base_model_dir).resolve())}}
                    if args.base_model_dir
                    else {}
                ),
                **({"evaluate": {"precision": args.eval_precision}} if args.eval_precision else {}),
            }
        ),
        encoding="utf-8",
    )
    smk.append(str(machine))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p),
    }
    reuse = args.reuse_loraflow and all(
        (results / "runs" / RUN / f).is_file() for f in ("train_stats.json", "eval.json")
    )
    if not reuse:
        say("loraflow: clean + split")
        run([*smk, "--until", "split", *config], work / "loraflow_split.log", env)
    n_train = count_lines(results / "data" / "train.jsonl")
    steps = math.ceil(math.ceil(n_train / 4) / 4)
    warmup = math.ceil(0.1 * steps)
    say(
        f"loraflow: {n_train} train / {count_lines(results / 'data' / 'val.jsonl')} val / "
        f"{count_lines(results / 'data' / 'test.jsonl')} test rows -> {steps} steps, warmup {warmup}; "
        + ("reusing the finished train and evaluate jobs in --work (--reuse-loraflow)" if reuse else "train + evaluate")
    )
    if not reuse:
        overrides = work / "overrides.json"  # a config file: --config would turn nested numbers into strings
        # the test generation is the figure; retention, consistency and most validation generations are not
        # compared, so --full-eval only adds minutes (the same for the base and the run)
        quick = {} if args.full_eval else {"retention_items": 0, "consistency_questions": 0, "val_samples": 8}
        train = {"warmup_steps": warmup, **({"compile": True} if args.compile else {})}
        overrides.write_text(
            json.dumps({"torch_threads": args.threads, "train": train, "evaluate": quick}), encoding="utf-8"
        )
        again = (
            "evaluate"
            if args.reuse_loraflow_train and (results / "runs" / RUN / "train_stats.json").is_file()
            else "train"
        )
        run(
            [*smk[:3], f"{results}/runs/{RUN}/eval.json", *smk[3:], str(overrides), "--forcerun", again, *config],
            work / "loraflow_run.log",
            env,
        )
    ts = jload(results / "runs" / RUN / "train_stats.json")
    ev = jload(results / "runs" / RUN / "eval.json")
    bench = results / "benchmarks" / "train" / f"{RUN}.tsv"
    with open(bench, encoding="utf-8") as fh:
        row = next(csv.DictReader(fh, delimiter="\t"))
    return {
        "results": results,
        "n_train": n_train,
        "warmup": warmup,
        "stats": ts,
        "eval": ev,
        "train_job_s": float(row["s"]),
        "train_job_max_rss": float(row["max_rss"]),
    }


def lf_side(args, work: Path, harness: Path, lfl: dict, precisions: list[str], cuda: bool) -> dict:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "LLAMAFACTORY_VERBOSITY": "WARN",
    }
    env.pop("PYTHONPATH", None)
    if args.lf_python:  # e.g. a machine with no venv: LLaMA-Factory installed into a directory on --lf-pythonpath
        py = Path(shutil.which(args.lf_python) or args.lf_python).absolute()  # the processes run in --work
        if args.lf_pythonpath:
            env["PYTHONPATH"] = args.lf_pythonpath
    else:
        venv = Path(args.lf_venv).expanduser()
        py = venv / "bin" / "python"
        if not (venv / "bin" / "llamafactory-cli").exists():
            raise SystemExit(f"no LLaMA-Factory venv at {venv}: bash {harness}/setup.sh (LF_VENV={venv})")
    # llamafactory-cli, in a process that records its own peak memory (on CUDA the GPU's, as loraflow reports it)
    cli = [str(py), str(REPO / "benchmarks" / "llamafactory_run.py")]
    device = ["use_cpu=false"] if cuda else []  # the harness's yaml files say use_cpu: true
    # predict decodes in loraflow's evaluation precision where one is given (else LLaMA-Factory infers it from the
    # model's dtype: bf16 on a GPU for a bf16 checkpoint)
    infer_dtype = (
        [f"infer_dtype={ {'fp32': 'float32', 'bf16': 'bfloat16'}[args.eval_precision] }"] if args.eval_precision else []
    )
    out = work / "lf"
    out.mkdir(exist_ok=True)
    if args.threads:  # torch reads these at start-up: the same number of compute threads as loraflow's torch_threads
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    results, model = lfl["results"], lfl["results"] / "base_model"
    run(
        [str(py), str(harness / "to_alpaca.py"), str(results / "data"), str(out / "data")],
        out / "to_alpaca.log",
        env,
        out,
    )
    run(
        [
            str(py),
            str(harness / "lf_tokens.py"),
            "--config",
            str(harness / "lf_train.yaml"),
            str(model),
            str(out / "data" / "loraflow_train.json"),
            "--loraflow-split",
            str(results / "data" / "train.jsonl"),
            "--json",
            str(out / "lf_tokens.json"),
        ],
        out / "lf_tokens.log",
        env,
        out,
    )
    tok = jload(out / "lf_tokens.json")
    lf = {"tokens": tok}
    for prec in precisions:
        finished = (out / f"lora_{prec}" / "train_results.json").is_file() and any(
            (out / f"train_{prec}{x}").is_file() for x in (".time", ".wall")
        )
        if args.reuse_lf_train and finished:
            say(f"LLaMA-Factory: reusing the finished {prec} training in --work (--reuse-lf-train)")
        else:
            say(f"LLaMA-Factory: train {prec}")
            shutil.rmtree(out / f"lora_{prec}", ignore_errors=True)
            wall = run(
                [
                    *cli,
                    str(out / f"train_{prec}.json"),
                    "train",
                    str(harness / "lf_train.yaml"),
                    f"model_name_or_path={model}",
                    f"dataset_dir={out / 'data'}",
                    f"output_dir={out / f'lora_{prec}'}",
                    f"bf16={'true' if prec == 'bf16' else 'false'}",
                    *device,
                ],
                out / f"train_{prec}.log",
                env,
                out,
                out / f"train_{prec}.time",
            )
            (out / f"train_{prec}.wall").write_text(f"{wall}\n")
        tr = jload(out / f"lora_{prec}" / "train_results.json")
        state = jload(out / f"lora_{prec}" / "trainer_state.json")
        wall, rss = peak(out, f"train_{prec}", cuda)
        lf[prec] = {
            "steps": state["global_step"],
            "train_loop_s": tr["train_runtime"],
            "tok_s": tok["tokens"] / tr["train_runtime"],
            "sup_tok_s": tok["supervised_tokens"] / tr["train_runtime"],
            "peak_rss_mb": rss,
            "wall_s": wall,
            "train_loss": tr["train_loss"],
            "adapter": out / f"lora_{prec}",
            "losses": [h["loss"] for h in state["log_history"] if "loss" in h],
        }
    say("LLaMA-Factory: predict with loraflow's adapter (the same weights as loraflow's evaluation)")
    shutil.rmtree(out / "predict", ignore_errors=True)
    # cutoff_len: LLaMA-Factory tokenises a predict row with its reference answer and shares cutoff_len between the
    # two, cutting the *prompt* when both do not fit (6 of 39 medical test rows at 512: it then answers another
    # question). The reference is never decoded, so a cutoff no row reaches keeps every prompt whole, as in loraflow.
    wall = run(
        [
            *cli,
            str(out / "predict.json"),
            "train",
            str(harness / "lf_predict.yaml"),
            f"model_name_or_path={model}",
            f"dataset_dir={out / 'data'}",
            f"adapter_name_or_path={results / 'runs' / RUN / 'adapter'}",
            f"output_dir={out / 'predict'}",
            "cutoff_len=65536",
            *device,
            *infer_dtype,
        ],
        out / "predict.log",
        env,
        out,
        out / "predict.time",
    )
    (out / "predict.wall").write_text(f"{wall}\n")
    pred = jload(out / "predict" / "predict_results.json")
    with open(out / "predict" / "generated_predictions.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    lf["predictions"], lf["prompts"] = [r["predict"] for r in rows], [r["prompt"] for r in rows]
    lf["generation_s"] = pred["predict_runtime"]
    lf["predict_wall_s"], lf["predict_rss_mb"] = peak(out, "predict", cuda)
    return lf


def trainer_reference(args, work: Path, results: Path, cuda: bool) -> dict | None:
    if not args.trainer_ref:
        return None
    if cuda:
        say("bench_training.py is a CPU benchmark: no tuned-Trainer reference on a GPU")
        return None
    say(f"benchmarks/bench_training.py: loraflow vs the tuned Trainer (ref2) on {args.trainer_ref} train rows")
    log = work / "bench_training.log"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_training.py"),
            "--results",
            str(results),
            "--examples",
            str(args.trainer_ref),
            "--skip-ref1",
            "--skip-extra",
            "--json",
            str(work / "bench_training.json"),
        ],
        log,
        env,
    )
    return jload(work / "bench_training.json")


def test_loss(results: Path, adapter: Path) -> float:
    """Mean NLL over the assistant tokens of the test split: base + `adapter`, fp32 weights, on this
    machine's device."""
    import torch
    from peft import PeftModel

    from loraflow.data.tokenization import load_split
    from loraflow.model.device import pick_device
    from loraflow.model.loading import load_causal_lm, load_tokenizer
    from loraflow.model.loss import mean_loss

    model_dir, device = str(results / "base_model"), pick_device()
    model = PeftModel.from_pretrained(load_causal_lm(model_dir, device, torch.float32), str(adapter)).eval()
    test = load_split(str(results / "tokens" / "test.npz"), str(results / "tokens" / "meta.json"), model_dir)
    return mean_loss(model, test, 8, load_tokenizer(model_dir).pad_token_id, device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data",
        default=default_data(),
        help="the data file (default: zh_medical_dialogue_im.jsonl in $LORAFLOW_DATA_DIR)",
    )
    ap.add_argument("--rows", type=int, default=400, help="first N rows of --data")
    ap.add_argument("--work", default="lfbench", help="working directory (created here if missing)")
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="wipe --work first (else finished data stages are reused; training always reruns)",
    )
    ap.add_argument(
        "--full-eval",
        action="store_true",
        help="loraflow's whole evaluation (retention, consistency, all val rows); "
        "default: test generation (the figure) and 8 val rows",
    )
    ap.add_argument(
        "--reuse-loraflow",
        action="store_true",
        help="take loraflow's figures from the finished train and evaluate "
        "jobs of an earlier invocation with the same --work (e.g. to rerun only the LLaMA-Factory side)",
    )
    ap.add_argument(
        "--reuse-loraflow-train",
        action="store_true",
        help="keep loraflow's finished training in --work and "
        "rerun its evaluation (and the base's where its settings changed), e.g. after a change to decoding",
    )
    ap.add_argument(
        "--reuse-lf-train",
        action="store_true",
        help="take LLaMA-Factory's training figures from its finished "
        "training in --work (its predict and everything after still run)",
    )
    ap.add_argument(
        "--compile", action="store_true", help="loraflow with train.compile: true (default: the config's, auto)"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="compute threads of both tools (0 = all cores, the harness's setting; "
        "on a machine shared with other jobs 1 avoids OpenMP threads waiting on each other)",
    )
    ap.add_argument("--lf-venv", default=os.environ.get("LF_VENV", "~/.cache/loraflow-peers/llamafactory"))
    ap.add_argument(
        "--lf-python",
        help="run LLaMA-Factory with this python instead of --lf-venv's (with --lf-pythonpath: where it "
        "is installed, e.g. wheels installed with pip --target on a machine with no venv)",
    )
    ap.add_argument("--lf-pythonpath", default="", help="PYTHONPATH of --lf-python's processes")
    ap.add_argument(
        "--harness",
        default=os.environ.get("LORAFLOW_LF_HARNESS"),
        help="the side-by-side harness's directory (default: $LORAFLOW_LF_HARNESS)",
    )
    ap.add_argument(
        "--base-model-dir",
        help="a local model directory for both tools in place of config.yaml's base model "
        "(e.g. the default architecture with random weights where its weights are not at hand)",
    )
    ap.add_argument(
        "--eval-precision",
        choices=["fp32", "bf16"],
        help="loraflow's evaluate.precision, and LLaMA-Factory's "
        "predict in the same dtype (infer_dtype); default: config.yaml's, and LLaMA-Factory's own choice from the "
        "model's dtype. fp32 keeps the greedy texts comparable where training runs in bf16",
    )
    ap.add_argument("--lf-precisions", default="same", help="'same' (loraflow's auto precision only) or e.g. fp32,bf16")
    ap.add_argument("--trainer-ref", type=int, default=64, help="rows for the bench_training.py reference (0 = skip)")
    args = ap.parse_args()

    if not args.harness:
        raise SystemExit("--harness: name the side-by-side harness's directory (or set LORAFLOW_LF_HARNESS)")
    harness = Path(args.harness).resolve()
    if not args.data:
        raise SystemExit(
            "--data: name the data file (or set LORAFLOW_DATA_DIR to the directory that holds "
            "zh_medical_dialogue_im.jsonl)"
        )
    work = Path(args.work)
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    import platform

    import torch

    from loraflow.model.device import cpu_has_fast_bf16, pick_device, training_precision

    device = pick_device()
    auto = training_precision("auto", device)
    precisions = [auto] if args.lf_precisions == "same" else args.lf_precisions.split(",")
    if auto not in precisions:
        precisions.insert(0, auto)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    gpu = f"GPU {torch.cuda.get_device_name()} (both tools train and predict on it); " if device.type == "cuda" else ""
    print(
        f"machine: {gpu}{cpu} x{os.cpu_count()}, native bf16: {cpu_has_fast_bf16()}, loraflow precision auto = {auto}; "
        f"threads per tool: {args.threads or 'all cores'}; "
        f"python {platform.python_version()}, torch {torch.__version__}"
    )

    lfl = loraflow_side(args, work, harness)
    lf = lf_side(args, work, harness, lfl, precisions, device.type == "cuda")
    ref = trainer_reference(args, work, lfl["results"], device.type == "cuda")
    say("test loss of both adapters (same rows, loraflow's mean NLL over assistant tokens)")
    ts, ev = lfl["stats"], lfl["eval"]
    loss_lf = {p: test_loss(lfl["results"], lf[p]["adapter"]) for p in precisions}
    loss_ours = test_loss(lfl["results"], lfl["results"] / "runs" / RUN / "adapter")

    ours = {
        "precision": ts["precision"],
        "steps": ts["steps"],
        "tokens": ts["tokens_seen"],
        "sup": ts["supervised_tokens_seen"],
        "loop": ts["train_time_s"],
        "tok_s": ts["tokens_seen"] / ts["train_time_s"],
        "sup_tok_s": ts["supervised_tokens_seen"] / ts["train_time_s"],
        "rss": ts["peak_memory_mb"],
    }
    answers, prompts = {}, {}
    with open(lfl["results"] / "runs" / RUN / "generations.jsonl", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            answers[r["id"]], prompts[r["id"]] = r["answer"], r["prompt"]
    with open(lfl["results"] / "data" / "test.jsonl", encoding="utf-8") as fh:
        ids = [json.loads(line)["id"] for line in fh if line.strip()]
    # LLaMA-Factory keeps a trailing incomplete character at the token cap ("\ufffd"); loraflow trims it
    same = sum(answers.get(i, None) == p.strip().rstrip("\ufffd").strip() for i, p in zip(ids, lf["predictions"]))
    same_prompt = sum(prompts.get(i, None) == p for i, p in zip(ids, lf["prompts"]))  # the same question asked
    meta = jload(lfl["results"] / "tokens" / "meta.json")["splits"]

    print()
    print(
        f"rows used: {args.rows} input rows -> train {meta['train']['examples']} / val {meta['val']['examples']} / "
        f"test {meta['test']['examples']} (loraflow's clean + split); train tokens {meta['train']['tokens']:,} "
        f"(LLaMA-Factory counts {lf['tokens']['tokens']:,}), supervised {meta['train']['supervised_tokens']:,} "
        f"({lf['tokens']['supervised_tokens']:,}); text identical in "
        f"{lf['tokens'].get('text_identical')}/{lf['tokens']['rows']} rows"
    )
    print(
        f"settings: optimizer steps {ours['steps']} (LLaMA-Factory "
        f"{', '.join(str(lf[p]['steps']) for p in precisions)}), warmup {lfl['warmup']} steps in both, loraflow "
        f"packing {ts.get('packing')}, tokens per forward pass {ts.get('tokens_per_forward') or 'micro-batch'}, "
        f"gradient checkpointing {ts.get('gradient_checkpointing')}"
    )
    cols = [f"LF {p}" for p in precisions]
    head = (
        f"{'':34s}"
        + "".join(f"{c:>12s}" for c in cols)
        + f"{'loraflow':>12s}"
        + "".join(f"{'ours/' + c:>16s}" for c in cols)
    )
    print(head)
    print("-" * len(head))

    def line(label, key, ours_value, fmt="{:,.1f}", ratio=True):
        vals = [lf[p].get(key) for p in precisions]
        cells = "".join(f"{fmt.format(v):>12s}" if v is not None else f"{'-':>12s}" for v in vals)
        rat = "".join(f"{ours_value / v:>15.2f}x" if ratio and v else f"{'':>16s}" for v in vals)
        print(f"{label:34s}{cells}{fmt.format(ours_value):>12s}{rat}")

    print(f"{'precision':34s}" + "".join(f"{p:>12s}" for p in precisions) + f"{ours['precision']:>12s}")
    line("train loop s", "train_loop_s", ours["loop"], ratio=False)
    line("real tokens/s", "tok_s", ours["tok_s"])
    line("supervised tokens/s", "sup_tok_s", ours["sup_tok_s"])
    line(
        "peak GPU MB (max_memory_allocated)" if device.type == "cuda" else "peak RSS MB (train process)",
        "peak_rss_mb",
        ours["rss"],
        "{:,.0f}",
    )
    for p in precisions:
        lf[p]["test_loss"] = loss_lf[p]
    line("test loss after training", "test_loss", loss_ours, "{:.4f}", ratio=False)
    print(
        f"{'generation s (' + str(len(ids)) + ' test rows)':34s}{lf['generation_s']:>12.1f}"
        f"{'':>{12 * (len(precisions) - 1)}s}{ev['generation_s']:>12.1f}"
        f"{lf['generation_s'] / ev['generation_s']:>15.2f}x faster"
    )
    print(
        f"{'greedy text identical':34s}{same}/{len(ids)} rows (LLaMA-Factory predict with loraflow's adapter; "
        f"prompts identical in {same_prompt}/{len(ids)})"
    )
    # the train job's own estimate (its settings as it ran them); the preflight stage's can be older: Snakemake does
    # not rerun the preflight when only runtime keys or the package change, so it is printed only next to it
    est, pre = ts.get("est_memory_mb") or ts.get("preflight_est_memory_mb"), ts.get("preflight_est_memory_mb")
    print(
        f"{'memory estimate MB (train job)':34s}{est:,.0f} vs measured {ours['rss']:,.0f} "
        f"({100 * (est / ours['rss'] - 1):+.1f} %)"
        + (f"; preflight stage's {pre:,.0f}" if pre and round(pre) != round(est) else "")
    )
    print(
        f"loraflow train job (Snakemake benchmark): {lfl['train_job_s']:.1f} s, max_rss "
        f"{lfl['train_job_max_rss']:,.0f} MB; eval_time_s (validation, not in the loop time) "
        f"{ts.get('eval_time_s', float('nan')):.1f}"
    )
    steps = list(
        csv.DictReader((lfl["results"] / "runs" / RUN / "train_log.csv").read_text(encoding="utf-8").splitlines())
    )
    if len(steps) > 1:  # step 1 holds the one-off costs: compiling the layers (train.compile), building oneDNN kernels
        first, last = steps[0], steps[-1]
        after = (int(last["tokens_seen"]) - int(first["tokens_seen"])) / (
            float(last["elapsed_s"]) - float(first["elapsed_s"])
        )
        print(
            f"loraflow after step 1 (train_log.csv): {after:.1f} real tokens/s ({after / lf['bf16']['tok_s']:.2f}x LF "
            "bf16)"
            if lf.get("bf16", {}).get("tok_s")
            else f"loraflow after step 1 (train_log.csv): {after:.1f} real tokens/s",
            f"; step 1 took {float(first['elapsed_s']):.1f} s for {int(first['tokens_seen']):,} tokens",
            sep="",
        )
    if ref:
        r2 = ref["ref2 Trainer dynamic+grouped"]
        lf_ref = ref["loraflow"]
        print(
            f"bench_training.py ({args.trainer_ref} rows): loraflow {lf_ref['tokens_per_s']:.1f} vs tuned Trainer "
            f"{r2['tokens_per_s']:.1f} real tokens/s -> {lf_ref['tokens_per_s'] / r2['tokens_per_s']:.2f}x "
            f"({lf_ref['precision']} vs {r2['precision']})"
        )
    summary = {
        "precisions": precisions,
        "loraflow": {**ours, "test_loss": loss_ours, "generation_s": ev["generation_s"], "est_memory_mb": est},
        "llamafactory": {p: {k: v for k, v in lf[p].items() if k != "adapter"} for p in precisions},
        "lf_generation_s": lf["generation_s"],
        "identical_text": [same, len(ids)],
        "identical_prompts": [same_prompt, len(ids)],
        "trainer_ref": ref,
        "rows": {k: meta[k]["examples"] for k in meta},
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    print(f"\nlogs and outputs: {work} (summary.json)")


if __name__ == "__main__":
    main()
