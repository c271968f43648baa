"""`loraflow push RUN --repo ID`: a run's adapter package (results/adapters/<run>/) or GGUF export
(results/export/<run>/) to a Hugging Face Hub model repository.

Both folders are complete Hub repositories as the workflow writes them: README.md is the model card
with the Hub's metadata (base_model, library_name, licence, tags), next to the files it describes.
The push checks that before anything is sent: the card parses with huggingface_hub's ModelCard and
names its library, and the files the card is about are there. Then it creates the repository
(exist_ok: pushing again adds a commit) and uploads the folder in one commit with `upload_folder`.
The token is huggingface_hub's own: HF_TOKEN, or the one `hf auth login` stored.
"""

from __future__ import annotations

from pathlib import Path

KINDS = {
    "adapter": ("adapters", ("adapter_config.json", "adapter_model.safetensors"), "peft"),
    "gguf": ("export", ("Modelfile", "export_check.json"), "gguf"),
}
IGNORE = [".*", "**/.*"]  # Snakemake's markers and other hidden files are not part of the model


class PushError(RuntimeError):
    """The folder is not ready to push, or no token."""

    expected_error = True


def folder_of(results_dir: str, run: str, kind: str = "adapter") -> Path:
    return Path(results_dir) / KINDS[kind][0] / run


def check_folder(folder: Path, kind: str = "adapter") -> dict:
    """The card's metadata, after checking the folder holds the card and the files it is about."""
    from huggingface_hub import ModelCard

    subdir, needed, library = KINDS[kind]
    if not folder.is_dir():
        how = (
            "snakemake export" if kind == "gguf" else "snakemake (the adapter_package rule, part of `snakemake export`)"
        )
        raise PushError(f"{folder}: no such folder; build it with {how}")
    missing = [f for f in ("README.md", *needed) if not (folder / f).is_file()]
    if kind == "gguf" and not list(folder.glob("*.gguf")):
        missing.append("*.gguf")
    if missing:
        raise PushError(f"{folder}: {', '.join(missing)} missing - not a complete loraflow {kind} folder")
    data = ModelCard.load(folder / "README.md").data.to_dict()
    if data.get("library_name") != library:
        raise PushError(
            f"{folder}/README.md: library_name is {data.get('library_name')!r}, expected {library!r} (a card from an "
            "older loraflow? rerun the rule)"
        )
    return data


def push(
    folder: str | Path,
    repo_id: str,
    *,
    kind: str = "adapter",
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
) -> dict:
    """Create `repo_id` (if needed) and upload `folder` to it in one commit. Returns what was sent."""
    from huggingface_hub import HfApi, get_token

    folder = Path(folder)
    meta = check_folder(folder, kind)
    token = token or get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login`")
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        commit_message=commit_message or f"loraflow: {folder.name} ({kind})",
        ignore_patterns=IGNORE,
    )
    files = sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
    )
    return {"repo": str(url), "commit": getattr(info, "commit_url", str(info)), "files": files, "metadata": meta}


def add_parser(sub) -> None:
    """The `push` subcommand of the loraflow command."""
    p = sub.add_parser(
        "push", help="upload a run's adapter package (or, with --gguf, its GGUF export) to the Hugging Face Hub"
    )
    p.add_argument("run", help="run name, e.g. r16_a32_qv")
    p.add_argument(
        "--repo",
        required=True,
        help="Hub repository id, e.g. your-name/support-bot-lora (created if it does not exist)",
    )
    p.add_argument(
        "--gguf",
        action="store_true",
        help="push results/export/RUN (GGUF files, Modelfile, card) instead of results/adapters/RUN",
    )
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--results-dir", default="results", help="the sweep's results directory (default results)")
    p.add_argument("--revision", default=None, help="branch to commit to (default the repository's main branch)")
    p.add_argument("--message", default=None, help="commit message")
    p.set_defaults(func=cmd_push)


def cmd_push(args) -> int:
    kind = "gguf" if args.gguf else "adapter"
    sent = push(
        folder_of(args.results_dir, args.run, kind),
        args.repo,
        kind=kind,
        private=args.private,
        revision=args.revision,
        commit_message=args.message,
    )
    print(f"pushed {len(sent['files'])} files ({', '.join(sent['files'])}) to {sent['repo']}\n{sent['commit']}")
    return 0
