"""Every command README.md and docs/*.md show runs as written, on the tiny test configuration.

Which text is a command is tests/doc_commands.py's rule: every line of a ```bash / ```sh / ```shell
block, every `$ ` line of a ```console block, and every inline code span of two or more words that starts
with snakemake, loraflow, bash, pip, python, mlflow or tensorboard (optionally `.venv/bin/`). Each command
is covered by the first entry of KINDS it matches or excluded, with its reason, by EXCLUDED; a command
that is neither fails test_every_docs_command_is_covered_or_excluded, and so does an EXCLUDED entry that
no longer matches a docs command. How each kind is checked:

- dry: a snakemake command, run as written with `-n` added (the full jobs train models), in a project
  directory laid out like the repository with the tiny config as config.yaml; `lf_*` targets run in a
  project that uses loraflow as a module through the README's own Snakefile. Every target must be planned.
- finished: run as written on a copy of the finished tiny sweep (`finished_run`, left as found):
  `snakemake --report ...`, `loraflow status|runs|best`.
- run: run as written in the project directory (`loraflow init`, `python -m loraflow...`).
- setup: `bash scripts/setup_env.sh` is not run (it installs): the script exists, is valid bash
  (`bash -n`), reads every variable the docs set for it, and every extra it names is in pyproject.toml.
- pip: not run (it installs): every extra is in pyproject.toml; every package is a requirement in
  pyproject.toml (pinned as the set-up pins it) or a wheel the set-up installs with --no-deps.
- script: exists and is valid bash; not run (reason in KINDS).
- help: a server or an upload, not run: `<program> --help` lists every option the command uses.
- env: `export NAME=...`: run before the later commands of its block.
A snakemake command with a target after `--resources`, `--config` ... fails
test_no_docs_command_puts_a_target_after_a_name_value_option.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from doc_commands import (
    doc_commands,
    fenced_code,
    snakemake_args,
    split_and,
    swallowed_targets,
    with_dry_run,
    workflow_rules,
)
from hypothesis import example, given, settings
from hypothesis import strategies as st
from packaging.requirements import Requirement

from helpers import REPO, tiny_config, write_config

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
COMMANDS = doc_commands(REPO)
SETUP_SCRIPT = REPO / "scripts" / "setup_env.sh"
WORKFLOW_RULES = workflow_rules(REPO)
V = r"(?:\.venv/bin/)?"
EXCLUDED = {
    rf"^{V}python -m pytest\b": "the test suite itself: CI runs it; running it from inside the suite would recurse",
    r"\bollama (create|run)\b": "needs Ollama and an exported run (`<run>` stands for a run name)",
    r"^loraflow init$": (
        "names the subcommand in prose; the full command `loraflow init mydata.csv -o mydata.yaml` is covered"
    ),
}
KINDS = [  # (pattern, kind) on one part of a command (`a && b` has two), first match wins
    (r"^(\w+=\S+ )*bash scripts/setup_env\.sh$", "setup"),
    (r"^bash scripts/gpu_check\.sh$", "script"),  # needs a CUDA GPU; its CPU smoke run: tests/test_gpu_check.py
    (rf"^{V}(python -m )?pip install ", "pip"),
    (rf"^{V}snakemake .*--report\b", "finished"),
    (rf"^{V}loraflow (status|runs|best)\b", "finished"),
    (rf"^{V}snakemake\b", "dry"),
    (rf"^{V}loraflow init \S", "run"),
    (rf"^{V}python -m loraflow\.\w", "run"),
    (rf"^{V}(mlflow ui|tensorboard|loraflow push)\b", "help"),  # servers, and an upload to the Hub
    (r"^export \w+=", "env"),
]
REQUIRED = {  # the commands the docs must show and this test must run
    "set-up": (r"bash scripts/setup_env\.sh", "setup"),
    "default run": (r"^snakemake --cores 1 --resources gpu=1$", "dry"),
    "export": (r"^snakemake export\b", "dry"),
    "report": (r"^snakemake --report report\.html$", "finished"),
    "status": (r"^loraflow status\b", "finished"),
    "runs": (r"^loraflow runs\b", "finished"),
    "best": (r"^loraflow best\b", "finished"),
    "module": (r"^snakemake lf_all\b", "dry"),
    "Slurm profile": (r"^snakemake --profile profiles/slurm$", "dry"),
}
LINKED = (
    "Snakefile",
    "workflow",
    "profiles",
    "config",
    "scripts",
    ".venv",
)  # what a command run at the repository root sees


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def excluded(text: str) -> str | None:
    return next((reason for pattern, reason in EXCLUDED.items() if re.search(pattern, text)), None)


def kind(part: str) -> str | None:
    return next((k for pattern, k in KINDS if re.search(pattern, part)), None)


def parts(cmd) -> list[tuple[str, str | None]]:
    return [] if excluded(cmd.text) else [(p, kind(p)) for p in split_and(cmd.text)]


def unique(kinds: set[str]):
    """(id, part, command) per distinct command part of these kinds (the same command in two docs runs once)."""
    seen = {}
    for cmd in COMMANDS:
        for part, k in parts(cmd):
            for variant in usage_variants(part):
                key = " ".join(re.sub(r"(^|\s)\.venv/bin/", r"\1", variant).split())
                if k in kinds and key not in seen:
                    seen[key] = pytest.param(variant, cmd, id=key[:70])
    return list(seen.values())


def usage_variants(part: str) -> list[str]:
    """`loraflow runs [results]` (usage notation: the argument may be left out) as both commands it means."""
    if not re.search(r" \[\w+\]", part):
        return [part]
    return [re.sub(r" \[(\w+)\]", "", part), re.sub(r" \[(\w+)\]", r" \1", part)]


def shell(cwd: Path, text: str, env: tuple[str, ...] = (), timeout: int = 300) -> subprocess.CompletedProcess:
    """`text` run by bash in `cwd` after the block's `export` lines, with the venv's programs on PATH."""
    environ = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO / "src")}
    script = "\n".join([*env, text])
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout)


def ok(proc: subprocess.CompletedProcess, text: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`{text}` failed ({proc.returncode}):\n{out[-5000:]}"
    return out


def link_repo(d: Path) -> Path:
    for name in LINKED:
        if not (d / name).exists():
            (d / name).symlink_to(REPO / name)
    return d


def write_csv(path: Path) -> None:
    rows = [
        ("What does the X1 cost?", "The X1 costs $129."),
        ("How long is the warranty?", "Two years."),
        ("Which colours?", "Red and blue."),
        ("Return window?", "30 days."),
    ] * 5
    path.write_text("question,answer\n" + "".join(f'"{q}","{a}"\n' for q, a in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model) -> Path:
    """A directory laid out like the repository with the tiny config and mydata.yaml written by the docs'
    `loraflow init`; in it `module/`, a project using loraflow as a module through the README's Snakefile,
    and `tracking/`, the tiny config with the README's tracking block."""
    d = link_repo(tmp_path_factory.mktemp("docs_project"))
    write_config(d, tiny_config(tiny_model))
    write_csv(d / "mydata.csv")
    init = next(c.text for c in COMMANDS if re.search(r"loraflow init mydata\.csv -o mydata\.yaml$", c.text))
    ok(shell(d, init), init)
    module = d / "module"
    module.mkdir()
    snakefile = fenced_code(REPO, "python", "module loraflow:")
    doc_path = re.search(r'snakefile: "([^"]+)"', snakefile).group(1)
    assert doc_path.endswith("workflow/Snakefile"), doc_path
    (module / "Snakefile").write_text(snakefile.replace(doc_path, str(REPO / "workflow" / "Snakefile")))
    write_config(module, tiny_config(tiny_model))
    (d / "tracking").mkdir()
    tracking = link_repo(d / "tracking")  # `snakemake track` exists once a tracker is on: the README's block
    write_config(tracking, {**tiny_config(tiny_model), **yaml.safe_load(fenced_code(REPO, "yaml", "tracking:"))})
    return d


@pytest.fixture(scope="module")
def finished(finished_run, tmp_path_factory) -> Path:
    """A copy of the finished tiny sweep, laid out like the repository (the original stays as found)."""
    src, _ = finished_run
    d = tmp_path_factory.mktemp("docs_finished") / "run"
    shutil.copytree(src, d, symlinks=True)
    return link_repo(d)


def test_every_docs_command_is_covered_or_excluded():
    unknown = [f"{c.source}: `{p}`" for c in COMMANDS for p, k in parts(c) if k is None]
    assert not unknown, "docs commands neither covered (KINDS) nor excluded (EXCLUDED):\n" + "\n".join(unknown)
    gone = [pattern for pattern in EXCLUDED if not any(re.search(pattern, c.text) for c in COMMANDS)]
    assert not gone, f"EXCLUDED entries that match no docs command any more (remove them): {gone}"
    covered = {(p, k) for c in COMMANDS for p, k in parts(c)}
    missing = [
        what
        for what, (pattern, k) in REQUIRED.items()
        if not any(k == got and re.search(pattern, re.sub(r"(^|\s)\.venv/bin/", r"\1", p)) for p, got in covered)
    ]
    assert not missing, f"the docs no longer show (or this test no longer runs) the {missing} command"
    for c in COMMANDS:
        if c.text.startswith("export "):
            assert any(c.text in later.env for later in COMMANDS), f"{c.source}: `{c.text}` comes before no command"


@functools.cache
def snakemake_parser():
    from snakemake.cli import get_argument_parser

    return get_argument_parser()


def test_no_docs_command_puts_a_target_after_a_name_value_option():
    """`snakemake --cores 1 --resources gpu=1 export` reads `export` as a resource: targets go first."""
    parser = snakemake_parser()
    bad = []
    for cmd in COMMANDS:
        for part in split_and(cmd.text):
            args = snakemake_args(part)
            swallowed = swallowed_targets(args, parser, WORKFLOW_RULES) if args is not None else []
            if swallowed:
                bad.append(f"{cmd.source}: `{part}` (targets first: snakemake {' '.join(swallowed)} ...)")
    assert not bad, "\n".join(bad)


RULES = st.sampled_from(sorted(WORKFLOW_RULES | {"lf_all", "results/comparison.md"}))
SEVERAL = st.sampled_from(
    [
        ["--resources", "gpu=1"],
        ["--resources", "gpu=1", "mem_mb=100"],
        ["--config", "seed=1"],
        ["--set-threads", "train=2"],
        ["--default-resources", "mem_mb=100"],
        ["--configfile", "c.yaml"],
        ["--quiet", "rules"],
        ["--forcerun", "track"],
    ]
)
SINGLE = st.sampled_from(
    [["--cores", "1"], ["-n"], ["-p"], ["--report", "r.html"], ["--profile", "profiles/slurm"], ["--directory", "d"]]
)
OPTIONS = st.lists(st.one_of(SEVERAL, SINGLE), max_size=3)


@settings(max_examples=60, deadline=None)
@given(head=OPTIONS, targets=st.lists(RULES, min_size=1, max_size=2, unique=True), tail=OPTIONS)
@example(head=[["--cores", "1"], ["--resources", "gpu=1"]], targets=["export"], tail=[])  # the README's old export line
def test_a_target_is_flagged_exactly_when_snakemake_would_not_read_it_as_one(head, targets, tail):
    """The check above agrees with snakemake's own parser: a flagged word is not read as a target, an
    unflagged command's targets are (after `--forcerun` a rule name is read as its value, as meant there)."""
    parser = snakemake_parser()
    args = [w for opt in head for w in opt] + targets + [w for opt in tail for w in opt]
    flagged = swallowed_targets(args, parser, WORKFLOW_RULES)
    try:
        parsed = parser.parse_args(args).targets
    except (ValueError, SystemExit):
        parsed = None  # what the README's old export command got: a traceback
    if flagged:
        assert flagged == targets and parsed != targets, (flagged, parsed)
    elif not (head and head[-1][0] == "--forcerun"):
        assert parsed == targets


def test_the_setup_script_is_valid_and_names_only_what_exists():
    assert SETUP_SCRIPT.is_file()
    proc = subprocess.run(["bash", "-n", str(SETUP_SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    script = SETUP_SCRIPT.read_text(encoding="utf-8")
    extras = re.search(r"\$\{EXTRAS:-([\w,-]+)\}", script).group(1).split(",")
    assert set(extras) <= set(pyproject()["project"]["optional-dependencies"]), extras
    for cmd in COMMANDS:  # every variable the docs set for the script is one it reads
        for part, k in parts(cmd):
            for name in re.findall(r"(\w+)=\S+ (?=.*setup_env)", part) if k == "setup" else []:
                assert f"${{{name}" in script or f"${name}" in script, (
                    f"{cmd.source}: setup_env.sh does not read {name}"
                )


def requirements() -> dict[str, Requirement]:
    reqs = [
        *pyproject()["project"]["dependencies"],
        *(r for rs in pyproject()["project"]["optional-dependencies"].values() for r in rs),
    ]
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


@pytest.mark.parametrize("part, cmd", unique({"pip"}))
def test_pip_commands_name_extras_and_packages_that_exist(part, cmd):
    from importlib.metadata import version

    script = SETUP_SCRIPT.read_text(encoding="utf-8")
    torch_pin = Requirement(re.search(r"TORCH_SPEC:-([^}]+)\}", script).group(1))
    no_deps = {
        w
        for line in script.splitlines()
        if "--no-deps" in line
        for w in line.split()
        if re.fullmatch(r"[a-z][\w.-]+", w)
    }
    words = shlex.split(part)
    skip_next = False
    for word in words[words.index("install") + 1 :]:
        if skip_next or word.startswith("-"):
            skip_next = word in ("--index-url", "-i", "--extra-index-url")
            continue
        req = Requirement(re.sub(r"^\.(?=\[)", "loraflow", word))  # `.[test]`: this project with extras
        if req.name == "loraflow":
            assert req.extras <= set(pyproject()["project"]["optional-dependencies"]), (
                f"{cmd.source}: extras {req.extras}"
            )
        elif req.name.lower() in requirements():
            if req.specifier:  # a pin: the set-up's, and one loraflow's own requirement allows
                assert str(req) == str(torch_pin), f"{cmd.source}: {word} but setup_env.sh installs {torch_pin}"
                pinned = next(iter(req.specifier)).version
                assert requirements()[req.name.lower()].specifier.contains(pinned), (
                    f"{cmd.source}: {word} vs pyproject.toml"
                )
        else:
            assert req.name in no_deps and version(req.name), (
                f"{cmd.source}: {word} is neither a requirement nor a set-up wheel"
            )


def planned(out: str) -> dict[str, int]:
    return {
        m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, flags=re.M) if m.group(1) != "total"
    }


@pytest.mark.parametrize("part, cmd", unique({"dry"}))
def test_snakemake_commands_plan_their_targets(part, cmd, project):
    args = snakemake_args(part)
    targets = snakemake_parser().parse_args(args).targets
    where = project / "module" if any(t.startswith("lf_") for t in targets) else project
    where = where / "tracking" if "track" in targets else where
    text = with_dry_run(part)
    out = ok(shell(where, text, cmd.env), text)
    jobs = planned(out)
    for target in targets or ["all"]:
        assert jobs.get(target, 0) >= 1, f"`{text}` plans no {target} job:\n{out[-3000:]}"
    if not targets:  # the tiny config's two grid points, or those of the config file the command names
        assert jobs.get("train", 0) == 2 if "--configfile" not in args else jobs.get("train", 0) >= 1, jobs
    if any(t.startswith("lf_") for t in targets):
        assert jobs["lf_train"] == 2 and "results/runs/r4_a8_qv/adapter" in out, jobs
    if "--profile" in args:  # the profile's own requests reach the jobs (the executor plugin read it)
        profile = yaml.safe_load((REPO / args[args.index("--profile") + 1] / "config.yaml").read_text(encoding="utf-8"))
        train = re.search(r"^rule train:\n((?:[ \t]+.*\n)+)", out, flags=re.M).group(1)
        for key, value in profile["set-resources"]["train"].items():
            assert re.search(rf"\b{key}={value}\b", train), f"{key}={value} not in the train job:\n{train}"


def test_the_module_example_is_the_readme_snakefile(project):
    text = (project / "module" / "Snakefile").read_text()
    assert "use rule * from loraflow as lf_*" in text and str(REPO / "workflow" / "Snakefile") in text


@pytest.mark.parametrize("part, cmd", unique({"finished"}))
def test_commands_on_a_finished_sweep(part, cmd, finished):
    out = ok(shell(finished, part, cmd.env), part)
    best = yaml.safe_load((finished / "results" / "best.json").read_text())["run"]
    command = re.sub(r"^\.venv/bin/", "", part).split()
    if "--report" in command:
        name = command[command.index("--report") + 1] if command[-1] != "--report" else "report.html"
        html = (finished / name).read_text(encoding="utf-8")
        assert html.lstrip().lower().startswith("<!doctype html") and "comparison" in html.lower(), name
    elif command[1] == "status":
        lines = out.strip().splitlines()
        assert {line.split()[0]: line.split()[1] for line in lines[:-1]} == {"r2_a8_qv": "done", "r4_a8_qv": "done"}, (
            out
        )
        assert lines[-1].startswith("sweep: 2 done"), out
    elif command[1] == "runs":
        rows = {line.split()[0]: line for line in out.splitlines()[1:]}
        assert set(rows) == {"r2_a8_qv", "r4_a8_qv"} and "best" in rows[best], out
    else:
        assert out.split()[0] == best and f"runs/{best}/adapter" in out, out


@pytest.mark.parametrize("part, cmd", unique({"run"}))
def test_commands_that_run_as_written(part, cmd, project, tmp_path):
    if "loraflow init" in part:
        write_csv(tmp_path / "mydata.csv")
        out = ok(shell(tmp_path, part), part)
        config = yaml.safe_load((tmp_path / "mydata.yaml").read_text(encoding="utf-8"))
        assert config["data"]["path"].endswith("mydata.csv") and "snakemake --configfile" in out, config
    else:  # the retention set, one JSON item a line, as many as the README says
        proc = shell(project, part)
        items = [json.loads(line) for line in ok(proc, part) and proc.stdout.splitlines()]
        stated = re.search(
            r"([\d,]+) generated\s+general\s+questions", (REPO / "README.md").read_text(encoding="utf-8")
        )
        assert len(items) == int(stated.group(1).replace(",", "")) and all(item["prompt"] for item in items)


@pytest.mark.parametrize("part, cmd", unique({"help"}))
def test_servers_and_uploads_take_the_options_the_docs_give(part, cmd):
    words = shlex.split(re.sub(r"^\.venv/bin/", "", part))
    program = words[:2] if words[0] in ("mlflow", "loraflow") else words[:1]
    out = ok(shell(REPO, shlex.join([*program, "--help"])), part)
    for option in (w.split("=")[0] for w in words if w.startswith("--")):
        assert option in out, f"{cmd.source}: `{part}` uses {option}, which `{' '.join(program)} --help` does not list"


@pytest.mark.parametrize("part, cmd", unique({"script"}))
def test_scripts_the_docs_name_exist_and_parse(part, cmd):
    script = REPO / shlex.split(part)[1]
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert script.is_file() and proc.returncode == 0, proc.stderr
