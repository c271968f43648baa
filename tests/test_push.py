"""`loraflow push`: huggingface_hub's real create_repo / upload_folder code, answered by a stand-in Hub at
the HTTP boundary (huggingface_hub's httpx client with a mock transport). What the Hub would receive is
decoded and compared with the folder on disk: repository, visibility, token, every file and its bytes."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from loraflow.cli import main
from loraflow.ship.card import card
from loraflow.ship.serve import write_serve
from loraflow.ship.settings import CardInfo, CardLocations

RUN = "r8_a16_qv"
TOKEN = "hf_test_token_not_real"


def provenance(tmp: Path) -> dict:
    return {
        "base_model": {
            "name": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "source": "builtin",
            "location": str(tmp / "pkg" / "data"),
            "gguf_file": "smollm2.gguf",
            "original": {"file": "smollm2.gguf", "sha256": "a" * 64},
            "converted_dir": str(tmp / "results" / "base_model"),
            "converted_sha256": "b" * 64,
            "architecture": "LlamaForCausalLM",
            "parameters": 134515008,
            "license_id": "apache-2.0",
            "license": "Apache-2.0",
            "license_source": "SmolLM2 model card",
            "tokenizer_sha256": "c" * 64,
        },
        "data": {
            "spec": str(tmp / "home" / "me" / "faq.csv"),
            "file": str(tmp / "home" / "me" / "faq.csv"),
            "sha256": "d" * 64,
            "rows_in": 10,
            "rows": {"train": 6, "val": 2, "test": 2, "rejected": 0},
            "split_files_sha256": "e" * 64,
        },
    }


def adapter_package(tmp: Path) -> Path:
    """results/adapters/<run>/ as the adapter_package rule leaves it (a hidden marker included)."""
    from safetensors.numpy import save_file

    results = tmp / "results"
    pkg = results / "adapters" / RUN
    pkg.mkdir(parents=True)
    (pkg / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]})
    )
    rng = np.random.default_rng(0)
    save_file(
        {"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": rng.standard_normal((8, 64)).astype(np.float32)},
        str(pkg / "adapter_model.safetensors"),
    )
    text = card(
        CardInfo(
            RUN,
            {"method": "lora", "r": 8, "lora_alpha": 16.0, "targets": "qv"},
            train_config={},
            system_prompt="Be brief.",
            max_new_tokens=16,
        ),
        provenance(tmp),
        {"run": RUN, "rougeL": 30.0},
        {},
        CardLocations(adapter_dir=str(pkg), model_dir=str(results / "runs" / RUN / "merged"), results_dir=str(results)),
    )
    (pkg / "README.md").write_text(text, encoding="utf-8")
    (pkg / ".snakemake_timestamp").touch()
    return pkg


def metadata_errors(readme: str) -> list[str]:
    """The stand-in's metadata check: the header parses and has what a model repository needs."""
    from huggingface_hub import ModelCard

    from loraflow.ship.card_meta import HUB_LICENSES

    data = ModelCard(readme).data.to_dict()
    errors = [f"missing {k}" for k in ("license", "library_name", "tags") if not data.get(k)]
    if data.get("license") not in HUB_LICENSES:
        errors.append(f"license {data.get('license')!r} is not a Hub licence id")
    return errors


class StandInHub:
    """Answers the Hub's create-repo, preupload, LFS batch, LFS upload and commit endpoints the way the
    Hub does (binary files go through LFS), and keeps every request."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict, bytes]] = []
        self.lfs: dict[str, bytes] = {}

    def __call__(self, request):
        import httpx2

        body = request.read()
        path = request.url.path
        self.requests.append((request.method, path, dict(request.headers), body))
        if path == "/api/repos/create":
            name = json.loads(body)
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{name['organization']}/{name['name']}"})
        if path == "/api/validate-yaml":  # the Hub checks the card's metadata before anything is uploaded
            errors = metadata_errors(json.loads(body)["content"])
            return httpx2.Response(
                400 if errors else 200, json={"errors": [{"message": e} for e in errors], "warnings": []}
            )
        if "/preupload/" in path:
            files = json.loads(body)["files"]
            return httpx2.Response(
                200,
                json={
                    "files": [
                        {
                            "path": f["path"],
                            "shouldIgnore": False,
                            "uploadMode": "lfs" if f["path"].endswith(".safetensors") else "regular",
                        }
                        for f in files
                    ]
                },
            )
        if path.endswith(".git/info/lfs/objects/batch"):
            objs = json.loads(body)["objects"]
            return httpx2.Response(
                200,
                json={
                    "transfer": "basic",
                    "objects": [
                        {**o, "actions": {"upload": {"href": f"https://lfs.stand-in.test/upload/{o['oid']}"}}}
                        for o in objs
                    ],
                },
            )
        if request.url.host == "lfs.stand-in.test":
            self.lfs[path.rsplit("/", 1)[1]] = body
            return httpx2.Response(200)
        if "/commit/" in path:
            return httpx2.Response(
                200, json={"commitUrl": "https://huggingface.co/me/bot/commit/0123abcd", "commitOid": "0123abcd"}
            )
        return httpx2.Response(404, json={"error": f"the stand-in Hub does not serve {request.method} {path}"})

    def commit(self) -> list[dict]:
        [(_, _, headers, body)] = [r for r in self.requests if "/commit/" in r[1]]
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


@pytest.fixture
def hub(monkeypatch):
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    stand_in = StandInHub()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(
        constants, "HF_HUB_OFFLINE", False
    )  # the tests' offline guard; every request goes to the stand-in
    monkeypatch.setattr(
        constants, "HF_HUB_DISABLE_XET", True
    )  # the Xet protocol's transfer is native code, not HTTP through this client
    _http.set_client_factory(
        lambda: httpx2.Client(
            transport=httpx2.MockTransport(stand_in),
            event_hooks={"request": [_http.hf_request_event_hook]},
            follow_redirects=True,
        )
    )
    yield stand_in
    _http.set_client_factory(_http.default_client_factory)


def test_push_creates_the_repo_and_sends_every_file_of_the_package_in_one_commit(hub, tmp_path, capsys):
    from huggingface_hub import ModelCard

    pkg = adapter_package(tmp_path)
    write_serve([str(pkg)], "results/base_model", str(tmp_path / "serve.md"))
    [command] = [ln for ln in (tmp_path / "serve.md").read_text().splitlines() if ln.startswith("loraflow push")]
    assert main([*shlex.split(command)[1:], "--private"]) == 0  # serve.md's command, as written

    posts = list(dict.fromkeys(p for m, p, _, _ in hub.requests if m == "POST"))  # in order of first use
    assert posts[:3] == ["/api/repos/create", "/api/validate-yaml", "/api/models/your-name/r8_a16_qv/preupload/main"]
    assert posts[-1] == "/api/models/your-name/r8_a16_qv/commit/main"
    [(_, _, headers, body)] = [r for r in hub.requests if r[1] == "/api/repos/create"]
    assert headers["authorization"] == f"Bearer {TOKEN}"
    validated = {json.loads(r[3])["content"] for r in hub.requests if r[1] == "/api/validate-yaml"}
    assert validated == {(pkg / "README.md").read_text()}
    assert json.loads(body) == {"name": RUN, "organization": "your-name", "visibility": "private", "type": "model"}
    assert all(
        h.get("authorization") == f"Bearer {TOKEN}" for m, p, h, _ in hub.requests if m == "POST"
    )  # the LFS PUT goes to storage

    on_disk = {p.name: p.read_bytes() for p in pkg.iterdir() if not p.name.startswith(".")}
    lines = hub.commit()
    assert lines[0]["key"] == "header" and RUN in lines[0]["value"]["summary"]
    regular = {v["value"]["path"]: base64.b64decode(v["value"]["content"]) for v in lines if v["key"] == "file"}
    lfs = {v["value"]["path"]: v["value"]["oid"] for v in lines if v["key"] == "lfsFile"}
    assert set(regular) | set(lfs) == set(on_disk) == {"README.md", "adapter_config.json", "adapter_model.safetensors"}
    assert all(regular[name] == on_disk[name] for name in regular)
    oid = hashlib.sha256(on_disk["adapter_model.safetensors"]).hexdigest()
    assert lfs == {"adapter_model.safetensors": oid} and hub.lfs[oid] == on_disk["adapter_model.safetensors"]

    meta = ModelCard(regular["README.md"].decode()).data.to_dict()
    assert (
        meta["library_name"] == "peft"
        and meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        and meta["license"] == "apache-2.0"
    )
    assert str(tmp_path) not in regular["README.md"].decode()
    assert f"https://huggingface.co/your-name/{RUN}" in capsys.readouterr().out


def test_an_incomplete_folder_or_no_token_sends_nothing(hub, tmp_path, monkeypatch, capsys):
    pkg = adapter_package(tmp_path)
    (pkg / "adapter_model.safetensors").unlink()
    assert main(["push", RUN, "--repo", "me/bot", "--results-dir", str(tmp_path / "results")]) == 1
    assert "adapter_model.safetensors missing" in capsys.readouterr().err
    assert main(["push", "no_such_run", "--repo", "me/bot", "--gguf", "--results-dir", str(tmp_path / "results")]) == 1
    assert "no such folder; build it with snakemake export" in capsys.readouterr().err

    good = adapter_package(tmp_path / "other")
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no stored login either
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf_home" / "stored_tokens"))
    assert main(["push", RUN, "--repo", "me/bot", "--results-dir", str(good.parent.parent)]) == 1
    assert "no Hugging Face token" in capsys.readouterr().err
    assert hub.requests == []
