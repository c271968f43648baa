"""Model cards as Hub model repositories: the metadata huggingface_hub parses, and no path of the machine
that built them. Provenance, licences and directories are generated."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loraflow.ship.card import card
from loraflow.ship.card_meta import HUB_LICENSES, display_path, front_matter, hub_license
from loraflow.ship.provenance import UNKNOWN_LICENSE
from loraflow.ship.settings import CardInfo, CardLocations

NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,15}", fullmatch=True).filter(
    lambda s: s not in (".", "..") and ".." not in s
)
LICENSES = st.one_of(
    st.sampled_from(sorted(HUB_LICENSES)),
    st.sampled_from(
        [
            "Apache-2.0",
            "MIT",
            "Apache License",
            "Llama 3.2 Community License",
            UNKNOWN_LICENSE,
            "Copyright (c) 2024 ACME",
        ]
    ),
    st.text(max_size=40),
)


@st.composite
def provenances(draw):
    """A provenance.json as write_provenance leaves it, with absolute paths under a generated machine root."""
    root = "/srv-" + "/".join(draw(st.lists(NAME, min_size=1, max_size=3)))
    results = f"{root}/{draw(NAME)}"
    source = draw(st.sampled_from(["builtin", "hub", "local"]))
    repo_id = f"{draw(NAME)}/{draw(NAME)}"
    name = {"builtin": "HuggingFaceTB/SmolLM2-135M-Instruct", "hub": repo_id, "local": draw(NAME)}[source]
    location = {"builtin": f"{root}/site-packages/loraflow/data", "hub": repo_id, "local": f"{root}/models/{name}"}[
        source
    ]
    data_file = f"{root}/home/{draw(NAME)}/{draw(NAME)}.csv"
    lic = draw(LICENSES)
    prov = {
        "base_model": {
            "name": name,
            "source": source,
            "location": location,
            "gguf_file": None,
            "original": None,
            "converted_dir": f"{results}/base_model",
            "converted_sha256": "c" * 64,
            "architecture": "LlamaForCausalLM",
            "parameters": 1000,
            "license_id": lic,
            "license": lic,
            "license_source": "test",
            "tokenizer_sha256": "t" * 64,
        },
        "data": {
            "spec": draw(st.sampled_from([data_file, "builtin", "hf:org/set"])),
            "file": data_file,
            "sha256": "d" * 64,
            "rows_in": 4,
            "rows": {"train": 2, "val": 1, "test": 1, "rejected": 0},
            "split_files_sha256": "s" * 64,
        },
    }
    return prov, results, root


def adapter_card(prov: dict, results: str, task: str = "causal_lm") -> str:
    run = "r4_a8_qv"
    info = CardInfo(
        run,
        {"method": "lora", "r": 4, "lora_alpha": 8.0, "targets": "qv"},
        train_config={},
        system_prompt="Be brief.",
        max_new_tokens=8,
        task=task,
    )
    return card(
        info,
        prov,
        {"run": run, "rougeL": 20.0},
        {},
        CardLocations(
            adapter_dir=f"{results}/adapters/{run}", model_dir=f"{results}/runs/{run}/merged", results_dir=results
        ),
    )


@settings(max_examples=60, deadline=None)
@given(provenances(), st.sampled_from(["causal_lm", "seq_cls"]))
def test_adapter_card_metadata_is_a_hub_model_card(case, task):
    from huggingface_hub import ModelCard, ModelCardData

    prov, results, _ = case
    text = adapter_card(prov, results, task)
    parsed = ModelCard(text)
    data = parsed.data.to_dict()
    assert data["library_name"] == "peft" and {"loraflow", "lora", "peft"} <= set(data["tags"])
    assert data["pipeline_tag"] == {"causal_lm": "text-generation", "seq_cls": "text-classification"}[task]
    assert data["license"] in HUB_LICENSES - {"unknown", "array"}
    if data["license"] == "other":
        assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", data["license_name"]) and "license: other" in parsed.text
    else:
        assert data["license"] == prov["base_model"]["license_id"].strip().lower()
    bm = prov["base_model"]
    assert data.get("base_model") == (bm["name"] if bm["source"] != "local" else None)
    assert data.get("base_model_relation") == ("adapter" if bm["source"] != "local" else None)
    assert ModelCardData(**data).to_dict() == data  # round trip


@settings(max_examples=60, deadline=None)
@given(provenances())
def test_cards_print_no_path_of_the_machine_that_built_them(case):
    prov, results, root = case
    text = adapter_card(prov, results)
    assert root not in text
    assert "`base_model`" in text and "adapters/r4_a8_qv" in text and "runs/r4_a8_qv/merged" in text
    if prov["data"]["spec"] not in ("builtin", "hf:org/set"):
        assert f"`{prov['data']['file'].rsplit('/', 1)[1]}`" in text


@given(provenances())
@settings(max_examples=30, deadline=None)
def test_gguf_export_metadata(case):
    from huggingface_hub import ModelCard

    prov, _, _ = case
    data = ModelCard(front_matter(prov, gguf=True) + "# x\n").data.to_dict()
    assert (
        data["library_name"] == "gguf"
        and {"gguf", "llama.cpp", "ollama"} <= set(data["tags"])
        and "base_model_relation" not in data
    )


@given(st.lists(NAME, min_size=1, max_size=4), st.lists(NAME, min_size=1, max_size=3))
def test_display_path_is_relative_inside_the_results_and_a_name_outside(inside, outside):
    results = "/m/" + "/".join(outside) + "/results"
    assert display_path(results + "/" + "/".join(inside), results) == "/".join(inside)
    assert display_path("/elsewhere/" + "/".join(inside), results) == inside[-1]
    assert display_path(None, results) is None


@pytest.mark.parametrize(
    "found, meta",
    [
        ("apache-2.0", {"license": "apache-2.0"}),
        ("MIT", {"license": "mit"}),
        (UNKNOWN_LICENSE, {"license": "other", "license_name": "unknown"}),
        ("Llama 3.2 Community License", {"license": "other", "license_name": "llama-3.2-community-license"}),
    ],
)
def test_hub_licence_ids(found, meta):
    assert hub_license(found) == meta


@given(
    st.sets(st.sampled_from(__import__("loraflow.ship.llama_check", fromlist=["CPU_FLAGS"]).CPU_FLAGS)),
    st.sets(st.from_regex(r"[a-z][a-z0-9_]{1,12}", fullmatch=True)),
    NAME,
)
@settings(max_examples=40, deadline=None)
def test_machine_features_are_read_from_cpuinfo(tmp_path_factory, listed, other, model):
    from loraflow.ship.llama_check import CPU_FLAGS, machine

    path = tmp_path_factory.mktemp("cpu") / "cpuinfo"
    flags = " ".join(sorted(listed | other))
    path.write_text(
        f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: {flags}\n\nprocessor\t: 1\nmodel name\t: "
        f"{model}\nflags\t\t: {flags}\n"
    )
    m = machine(str(path))
    assert m["cpu"] == model and m["cpu_flags"] == [f for f in CPU_FLAGS if f in listed | other]
