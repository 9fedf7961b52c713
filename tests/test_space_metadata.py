"""The deployment manifests: README.md's Space block (read by Hugging Face) against requirements.txt and the
Spaces configuration reference, and the Deta Space ``Spacefile``."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import yaml  # a dependency of huggingface_hub
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
# Optional OAuth scopes a Space may ask for (openid and profile are always granted), per the Hub docs.
OAUTH_SCOPES = {"email", "read-billing", "read-repos", "contribute-repos", "write-repos", "manage-repos",
                "inference-api", "jobs", "webhooks", "write-discussions"}
DETA_ENGINES = {"static", "react", "svelte", "vue", "next", "nuxt", "svelte-kit", "python3.9", "python3.8",
                "nodejs16", "custom"}


def front_matter(text: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must open with a YAML block between two '---' lines"
    return yaml.safe_load(match.group(1))


@pytest.fixture(scope="module")
def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def meta(readme) -> dict:
    return front_matter(readme)


@pytest.fixture(scope="module")
def requirements() -> dict[str, Requirement]:
    reqs = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            reqs[req.name.lower().replace("_", "-")] = req
    return reqs


def test_the_block_describes_a_gradio_space_running_app_py(meta):
    assert meta["sdk"] == "gradio"
    assert meta["app_file"] == "app.py" and (ROOT / meta["app_file"]).is_file()
    assert meta["title"] and meta["license"] == "apache-2.0"
    assert meta["colorFrom"] in COLORS and meta["colorTo"] in COLORS
    assert 0 < len(meta["short_description"]) <= 60  # the Hub's limit for the card
    assert len(meta["emoji"]) == 1


def test_sdk_version_is_the_gradio_pin_with_oauth_and_what_the_tests_run(meta, requirements):
    gradio = requirements["gradio"]
    assert "oauth" in gradio.extras, "hf_oauth needs gradio[oauth] (itsdangerous, authlib)"
    (spec,) = gradio.specifier
    assert spec.operator == "==" and isinstance(meta["sdk_version"], str)
    assert meta["sdk_version"] == spec.version
    assert importlib.metadata.version("gradio") == meta["sdk_version"]


def test_python_version_is_one_every_requirement_accepts(meta, requirements):
    version = meta["python_version"]
    assert isinstance(version, str), 'quote python_version ("3.11"): YAML reads 3.10 as the number 3.1'
    assert Version(version) >= Version("3.11"), "transformers 5.x needs Python >= 3.11; Spaces default to 3.10"
    for name in requirements:
        try:
            needs = importlib.metadata.metadata(name)["Requires-Python"]
        except importlib.metadata.PackageNotFoundError:
            continue
        if needs:
            assert SpecifierSet(needs).contains(Version(version + ".0") if version.count(".") == 1 else version), (
                f"{name} needs Python {needs}; python_version is {version}")


def test_oauth_is_on_with_scopes_that_can_write_repos(meta):
    assert meta["hf_oauth"] is True
    scopes = set(meta["hf_oauth_scopes"])
    assert scopes <= OAUTH_SCOPES, f"unknown scopes: {scopes - OAUTH_SCOPES}"
    assert "write-repos" in scopes  # pushing a config to the signed-in user's repo
    assert scopes & {"manage-repos", "contribute-repos"}  # creating the repo when it does not exist yet


def test_the_models_it_uses_are_declared(meta):
    from core.models import EMBEDDED_HUB_ID

    assert meta["models"] == ["HuggingFaceTB/SmolLM2-135M-Instruct", "google/gemma-3-270m"]
    assert EMBEDDED_HUB_ID in meta["models"] and EMBEDDED_HUB_ID in meta.get("preload_from_hub", [])


def test_the_readme_has_a_deploy_section_naming_both_hosts_files(readme):
    body = readme.split("\n---\n", 1)[1]
    assert body.lstrip().startswith("# Decoding Playground")
    deploy = body.split("\n## Deploy\n", 1)[1]
    for needle in ("Spacefile", "requirements.txt", "hf_oauth", "Sign in with Hugging Face", "Push to the Hub",
                   "config_file_name", "GenerationConfig.from_pretrained", "HF_TOKEN", "download.pytorch.org/whl/cpu"):
        assert needle in deploy, needle


def test_spacefile_is_a_valid_deta_space_manifest_for_the_same_app():
    spacefile = yaml.safe_load((ROOT / "Spacefile").read_text())
    assert spacefile["v"] == 0
    assert len(spacefile.get("app_name", "")) <= 12
    (micro,) = spacefile["micros"]
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", micro["name"])
    assert (ROOT / micro["src"]).is_dir() and (ROOT / micro["src"] / "app.py").is_file()
    assert micro["engine"] in DETA_ENGINES
    assert "python app.py" in micro["run"] and "$PORT" in micro["run"]
    env = {e["name"]: e for e in micro["presets"]["env"]}
    assert {"PLAYGROUND_MODEL", "PLAYGROUND_SLOTS", "HF_TOKEN"} <= set(env)
    assert all(e.get("description") for e in env.values())
    assert all(isinstance(e.get("default", ""), str) for e in env.values())
