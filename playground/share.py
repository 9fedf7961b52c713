"""Save, load and push ``GenerationConfig``s: pure functions over transformers and huggingface_hub (no UI).

The order of a push, so that a failure never loses the user's settings:
1. the tab's settings (plus the fields it has no control for) become a ``GenerationConfig``;
2. it is saved under ``config_file_name`` in a local folder with ``GenerationConfig.save_pretrained``
   (the JSON transformers writes: only the values that differ from the defaults);
3. only then is that very file sent to the Hub (``create_repo(exist_ok=True)`` + ``upload_file``);
   every failure becomes an ``Outcome`` whose message says what failed and what to do.

The token is passed straight to ``huggingface_hub``; nothing here logs it, writes it, or puts it in a message.
In public mode (``policy.public_mode()``: a Space, or ``PLAYGROUND_PUBLIC=1``) the server's own token is never
used for a visitor, and no message names a server path (the saved file is offered as a download instead).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id
from transformers import GenerationConfig
from transformers.generation.configuration_utils import METADATA_FIELDS

from .fields import as_number_type
from .policy import TransportError, public_mode

DEFAULT_FILE_NAME = "generation_config.json"
DEFAULT_FOLDER = os.environ.get("PLAYGROUND_CONFIG_DIR", "saved_configs")
TOKENS_URL = "https://huggingface.co/settings/tokens"

@dataclass(frozen=True)
class Outcome:
    """What a save or push did: ``message`` is shown to the user as is; ``path`` is the local copy."""

    ok: bool
    message: str
    path: Path | None = None
    url: str | None = None


# --- settings <-> GenerationConfig ---------------------------------------------------------------

def config_from_settings(settings: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> GenerationConfig:
    """A ``GenerationConfig`` from a tab's control values; ``extra`` holds fields the tab has no control for
    (kept from a loaded config). Controls win over ``extra``; ``None`` and empty text mean "not set"."""
    merged = {**(extra or {}), **settings}
    values = {}
    for key, value in merged.items():
        if value is None or value == "" or key in METADATA_FIELDS:
            continue
        values[key] = as_number_type(key, value)
    return GenerationConfig(**values)


def config_json(config: GenerationConfig) -> str:
    """The JSON ``save_pretrained`` writes: the values that differ from ``GenerationConfig()``'s defaults."""
    return config.to_json_string(use_diff=True, keys_to_pop=["compile_config"])


def config_values(config: GenerationConfig) -> dict[str, Any]:
    """The saved fields of ``config`` as plain JSON values, without transformers' metadata fields."""
    values = json.loads(config_json(config))
    return {k: v for k, v in values.items() if k not in METADATA_FIELDS}


def split_values(values: Mapping[str, Any], fields: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split loaded ``values`` into those a tab has a control for and the rest (kept, saved back)."""
    fields = set(fields)
    known = {k: v for k, v in values.items() if k in fields}
    extra = {k: v for k, v in values.items() if k not in fields}
    return known, extra


def default_value(field: str) -> Any:
    """What ``generate`` uses for ``field`` when a config leaves it unset (transformers' global default)."""
    return GenerationConfig._get_default_generation_params().get(field)


# --- file names and folders ----------------------------------------------------------------------

def check_file_name(name: str | None) -> str:
    """``config_file_name`` must be a bare file name ending in ``.json``; returns it stripped."""
    name = (name or "").strip()
    if not name:
        raise ValueError(f"`config_file_name` must be a file name ending in .json, e.g. {DEFAULT_FILE_NAME}; got ''")
    if "/" in name or "\\" in name or name in (".", "..") or os.sep in name:
        raise ValueError(f"`config_file_name` must be a bare file name without folders (no '/' or '\\'); got {name!r}")
    if not name.endswith(".json") or name == ".json":
        raise ValueError(f"`config_file_name` must end in .json; got {name!r}")
    return name


def check_folder(folder: str | os.PathLike | None) -> Path:
    folder = str(folder or "").strip()
    if not folder:
        raise ValueError(f"`folder` must be a local folder path, e.g. {DEFAULT_FOLDER}; got ''")
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"`folder` must be a folder, not a file; got {folder!r}")
    return path


def check_repo_id(repo_id: str | None) -> str:
    repo_id = (repo_id or "").strip()
    if not repo_id:
        raise ValueError("`repo_id` must be a Hub repo id such as your-name/your-model; got ''")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"`repo_id` must be 'namespace/name' (letters, digits, '-', '_', '.'); got {repo_id!r}: "
                         f"{err}") from err
    return repo_id


# --- save and load -------------------------------------------------------------------------------

def save_config(config: GenerationConfig, folder: str | os.PathLike, config_file_name: str,
                user_set: Iterable[str] | None = None) -> Path:
    """Save ``config`` as ``folder/config_file_name`` with ``GenerationConfig.save_pretrained``.

    ``user_set`` names the fields the user set (a tab's widgets and defining fields); the others came with
    a loaded config. transformers refuses to save a modified config with any "minor issue" (e.g.
    ``temperature`` while ``do_sample=False``) but only warns for a config as it was loaded; with
    ``user_set`` the issues are judged with transformers' own provenance rule (``validate(strict=True,
    user_set_attributes=...)``), so a loaded field that only matters for another strategy is kept and
    saved back, while a conflict the user made is still refused. Raises ``ValueError`` naming the field."""
    name = check_file_name(config_file_name)
    path = check_folder(folder)
    try:
        if user_set is not None:
            config.validate(strict=True, user_set_attributes=set(user_set))
            config._original_object_hash = hash(config)  # judged above: save_pretrained only warns now
        config.save_pretrained(path, config_file_name=name)
    except ValueError as err:  # transformers names the fields
        raise ValueError(f"transformers refuses to save this config: {err}") from None
    return path / name


def download_copy(path: Path, folder: Path) -> Path:
    """A copy of a saved file under ``folder`` (the session's), with the same name, for the browser to download
    (the file itself, when it already lies there)."""
    target = Path(folder) / "downloads" / path.name
    if Path(path).resolve() != target.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return target


def _read(source: str | os.PathLike, config_file_name: str | None = None, **kwargs) -> GenerationConfig:
    try:
        return GenerationConfig.from_pretrained(source, config_file_name=config_file_name, **kwargs)
    except ValueError as err:  # a field transformers rejects (e.g. `max_new_tokens` <= 0)
        raise ValueError(f"the file holds an invalid GenerationConfig: {err}") from None


def load_file(path: str | os.PathLike) -> GenerationConfig:
    """Load an uploaded JSON file (any name)."""
    path = Path(path)
    if path.suffix != ".json":
        raise ValueError(f"the uploaded file must be a .json GenerationConfig; got {path.name!r}")
    return _read(path.parent, path.name)


def load_local(folder: str | os.PathLike, config_file_name: str) -> GenerationConfig:
    """Load ``folder/config_file_name``."""
    name = check_file_name(config_file_name)
    path = check_folder(folder)
    if not (path / name).is_file():
        where = "this session's folder (save one first)" if public_mode() else f"folder {str(path)!r}"
        raise ValueError(f"`config_file_name` {name!r} was not found in {where}")
    return _read(path, name)


def load_hub(repo_id: str, config_file_name: str, token: str | None = None,
             cache_dir: str | os.PathLike | None = None) -> GenerationConfig:
    """Load ``config_file_name`` from the Hub repo ``repo_id`` (``GenerationConfig.from_pretrained``).
    Without a token, a public server reads anonymously (``token=False``): huggingface_hub would otherwise pick
    up the server's own HF_TOKEN secret and let any visitor read its owner's private repos."""
    repo_id = check_repo_id(repo_id)
    name = check_file_name(config_file_name)
    implicit = False if public_mode() else None
    return _read(repo_id, name, token=token or implicit, cache_dir=cache_dir)


# --- push ----------------------------------------------------------------------------------------

def on_space() -> bool:
    """True on a Hugging Face Space (the same test Gradio uses to enable real OAuth). Only the login button needs
    a real Space; what a public server must not do follows ``policy.public_mode()``."""
    return os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("SPACE_ID"))


def resolve_token(oauth_token: str | None = None, typed_token: str | None = None) -> str | None:
    """The token to push with: the signed-in user's OAuth token first. In public mode only the visitor's own
    token counts (never the server's HF_TOKEN secret, which would let anyone push as its owner); locally
    ``HF_TOKEN``, then the masked field, then the token of ``hf auth login``."""
    if oauth_token:
        return oauth_token
    typed = (typed_token or "").strip() or None
    if public_mode():
        return typed
    return os.environ.get("HF_TOKEN") or typed or get_token()


NO_TOKEN = ("Push failed: no Hugging Face token. On a Space, sign in with the \"Sign in with Hugging Face\" "
            "button; locally, set the HF_TOKEN environment variable or paste a token with write access into "
            f"the token field ({TOKENS_URL}).")


def _saved(path: Path) -> str:
    if public_mode():
        return f" Nothing is lost: the config is saved as {path.name} (download below)."
    return f" Nothing is lost: the config is saved at {path}."


def failure_message(err: BaseException, repo_id: str, endpoint: str) -> str:
    """Map a huggingface_hub error to what failed and what to do (without the token)."""
    if isinstance(err, OfflineModeIsEnabled):
        return ("Push failed: huggingface_hub is in offline mode (HF_HUB_OFFLINE is set). Unset HF_HUB_OFFLINE "
                "and push again.")
    if isinstance(err, TransportError):
        return (f"Push failed: could not reach the Hub at {endpoint} (network unreachable or offline). "
                "Check your connection (or HF_ENDPOINT) and push again.")
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, RepositoryNotFoundError) or status == 404:
        return (f"Push failed: repo `{repo_id}` was not found (404). Check the repo id (namespace/name), that "
                "the namespace exists, and that your token can see and create repos in it.")
    if status == 401:
        return ("Push failed: the Hub rejected the token (401 Unauthorized): it is invalid or has expired. "
                f"Sign in again, or create a new token with write access at {TOKENS_URL}.")
    if status == 403:
        return (f"Push failed: no write access to `{repo_id}` (403 Forbidden): the token lacks write scope, or "
                "your account cannot write to (or create a repo in) that namespace. Use a token with write "
                f"access ({TOKENS_URL}; a fine-grained token needs write permission on this repo), or push to a "
                "repo under your own namespace.")
    if isinstance(err, HfHubHTTPError):
        server = getattr(err, "server_message", None) or ""
        return f"Push failed: the Hub answered HTTP {status}{': ' + server if server else ''}. Try again later."
    return f"Push failed: {type(err).__name__}: {err}"


def push_config(config: GenerationConfig, repo_id: str, config_file_name: str, commit_message: str | None,
                token: str | None, folder: str | os.PathLike = DEFAULT_FOLDER,
                user_set: Iterable[str] | None = None) -> Outcome:
    """Save ``config`` locally (see ``save_config``), then commit that file to the Hub model repo ``repo_id``."""
    try:
        name = check_file_name(config_file_name)
        repo_id = check_repo_id(repo_id)
        path = save_config(config, folder, name, user_set)
    except ValueError as err:
        return Outcome(False, f"Push failed before saving: {err}")
    if not token:
        return Outcome(False, NO_TOKEN + _saved(path), path)
    message = (commit_message or "").strip() or f"Upload {name}"
    endpoint = constants.ENDPOINT  # read now, so HF_ENDPOINT / a patched constant applies to this call
    api = HfApi(endpoint=endpoint, token=token)
    try:
        full_id = api.create_repo(repo_id, exist_ok=True).repo_id
        info = api.upload_file(path_or_fileobj=str(path), path_in_repo=name, repo_id=full_id, commit_message=message)
    except (HfHubHTTPError, TransportError, OfflineModeIsEnabled) as err:
        return Outcome(False, failure_message(err, repo_id, endpoint) + _saved(path), path)
    url = f"{endpoint}/{full_id}/blob/main/{name}"
    return Outcome(True, f"Pushed `{name}` to `{full_id}` (commit {info.oid[:7]}: {message!r}). "
                         f"Load it with GenerationConfig.from_pretrained({full_id!r}, config_file_name={name!r}). "
                         + ("Download the saved copy below." if public_mode() else f"Saved locally at {path}."),
                   path, url)
