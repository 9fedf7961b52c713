"""One forward pass for many runs: the pieces ``core.scheduler`` joins decode steps of several runs with, each of them
keeping every row's result bit for bit what the run alone would get.

A decode step of a decoder-only model touches a row's numbers in three kinds of places:

1. row-wise work (embeddings, norms, rotary, activations): batch-invariant as it is;
2. the linear layers, the weights every row reads: one read of the weights for all rows is the whole point, but a
   CPU's BLAS reduces a product of few rows (a matrix-vector kernel for one, small-matrix kernels for a few) in
   another order than a product of many, so the last bits move. ``probe`` measures, for the model's dtype and device,
   from how many rows on a product's rows keep their bits whatever the rows around them (``Linears.shared_from``).
   ``RowExactLinear`` then computes the runs of that many rows or more in one plain product; every 1-row run as its
   own 1-row product, all of them in one ``torch.bmm`` over a tile of the weights small enough to stay in the cache
   while every row reads it (the bits of the 1-row kernel, the memory traffic of the batched one); and any other run
   as its own product, which is what its solo step computes;
3. attention, each row against its own run's KV cache: ``SegmentedCache`` appends each run's new keys and values to
   that run's own ``DynamicCache`` (as its solo step would) and hands the attention the runs as ``Segments``; the
   attention (transformers' ``sdpa`` entry, wrapped once by ``install_segmented_attention``) then runs each run's
   rows exactly as the run's solo step does, with the mask its solo step builds. Nothing is padded or copied.

Shape legend as in ``core/loop.py``: B rows of the batched step, b a run's rows, S its cache length, H hidden size.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

TILE_BYTES = 4 << 20  # a weight tile every row of a step reads while it stays in the cache (L3 here: 32 MiB)

# decoder-only families whose decode forward is: embed, create_causal_mask, layers (attention through the interface
# registry, cache.update right before it), norm, head; where a step's cache is a plain DynamicCache
BATCHED_MODEL_TYPES = frozenset({"llama", "qwen2", "qwen3", "mistral"})
# what a decode step of those models may carry (``prepare_inputs_for_generation``'s keys) to be batched
BATCHED_INPUTS = frozenset({"input_ids", "cache", "position_ids", "attention_mask", "logits_to_keep", "use_cache",
                            "output_hidden_states", "return_dict"})


# --- 2. linear layers ------------------------------------------------------------------------------------------
def row_exact_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` with every row of ``x`` [..., K] computed as the 1-row product ``F.linear`` makes
    for that row alone: one ``bmm`` of M 1-row products per tile of output features (weight [N, K])."""
    rows = x.reshape(-1, 1, x.shape[-1])  # [M, 1, K]
    m, k, n = rows.shape[0], x.shape[-1], weight.shape[0]
    tile = max(256, TILE_BYTES // max(k * weight.element_size(), 1))
    wt = weight.t()  # [K, N], a view
    if n <= tile:
        out = torch.bmm(rows, wt.expand(m, k, n))
    else:
        out = torch.cat([torch.bmm(rows, wt[:, s:s + tile].expand(m, k, min(tile, n - s))) for s in range(0, n, tile)],
                        dim=-1)
    out = out.reshape(*x.shape[:-1], n)
    return out + bias if bias is not None else out


@dataclass(frozen=True)
class Linears:
    """How rows of several runs may share a linear layer and keep every row's solo bits (``probe``'s answer).
    ``shared_from``: runs of at least this many rows share one plain product (1: every run, the product is row-invariant
    here); None: no run does. ``single_rows``: the 1-row runs share ``row_exact_linear``'s pass. False when no rows
    may share a forward at all."""

    shared_from: int | None
    single_rows: bool

    def __bool__(self) -> bool:
        return self.shared_from is not None or self.single_rows

    @property
    def plain(self) -> bool:
        """One plain ``F.linear`` over every row of the step."""
        return self.shared_from == 1


PLAIN = Linears(1, True)  # every product row-invariant (oneDNN's bfloat16 kernels), or solo bits given up
SEPARATE = Linears(None, False)  # rows of several runs never share a forward


class RowExactLinear(TorchFunctionMode):
    """Within it (on this thread), every ``F.linear`` over the rows of a batched step [B, 1, K] computes each run's
    rows as the run's own step does (``linears``: ``probe``'s answer; ``sizes``: each run's rows, in order): the runs
    of ``linears.shared_from`` rows or more in one plain product, the 1-row runs by ``row_exact_linear`` in one pass
    over the weights, any other run by ``F.linear`` of its own rows (the kernel its solo step uses)."""

    def __init__(self, sizes: list[int], linears: Linears):
        super().__init__()
        self.sizes, self.total = sizes, sum(sizes)
        starts = list(itertools.accumulate([0, *sizes[:-1]]))
        shared_from = linears.shared_from or self.total + 1
        self.shared = self._rows([(a, n) for a, n in zip(starts, sizes) if n >= shared_from])
        singles = [(a, n) for a, n in zip(starts, sizes) if n == 1 < shared_from and linears.single_rows]
        self.singles = self._rows(singles)
        self.alone = [slice(a, a + n) for a, n in zip(starts, sizes) if n < shared_from and (a, n) not in singles]

    @staticmethod
    def _rows(runs: list[tuple[int, int]]) -> torch.Tensor | None:
        """The rows of ``runs`` ((first row, rows) each) as one index, None for no run."""
        return torch.tensor([a + i for a, n in runs for i in range(n)]) if runs else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and args[0].dim() >= 2 and args[0].shape[0] == self.total and self.total > 1:
            x = args[0]
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if self.singles is not None and self.shared is None and not self.alone:
                return row_exact_linear(x, weight, bias)
            out = x.new_empty(*x.shape[:-1], weight.shape[0])
            if self.shared is not None:
                out[self.shared] = F.linear(x[self.shared], weight, bias)
            if self.singles is not None:
                out[self.singles] = row_exact_linear(x[self.singles], weight, bias)
            for rows in self.alone:
                out[rows] = F.linear(x[rows], weight, bias)
            return out
        return func(*args, **kwargs)


PROBE_ROWS = 16  # products of up to this many rows are checked at a few offsets in a bigger one, and a few bigger
SHARED_FROM_MAX = 8  # runs of more rows than this never share a product: fewer kept bits would be a chance finding


def probe(model) -> Linears:
    """How a step may join rows of several runs on ``model`` and keep each row's bits (``Linears``), checked on each
    shape of the model's own linear layers (their weights, dtype and device, and this thread's torch threads), since
    a BLAS picks its kernels and tiles by shape: from how many rows on a product's rows equal the same rows in any
    bigger product (``shared_from``; 1 for "every product": oneDNN's bfloat16 kernels on a CPU), and whether
    ``row_exact_linear`` matches the 1-row kernel."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not layers or any(type(m.weight) not in (torch.Tensor, torch.nn.Parameter) for m in layers):
        return SEPARATE  # no linear layer, or quantized ones: nothing to vouch for
    weights = {tuple(m.weight.shape): m.weight for m in layers}  # one weight per shape
    answers = [_probe_weight(w) for w in weights.values()]
    if all(a.plain for a in answers):
        return PLAIN
    shared = [a.shared_from for a in answers]
    return Linears(None if None in shared else max(shared), all(a.single_rows for a in answers))


def _probe_weight(weight: torch.Tensor) -> Linears:
    """``probe`` on one weight [N, K], with random rows."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4 * PROBE_ROWS, weight.shape[1], generator=gen).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        whole = F.linear(x, weight)
        sizes = [*range(1, PROBE_ROWS + 1), 2 * PROBE_ROWS, 3 * PROBE_ROWS - 1]
        keeps = [all(torch.equal(F.linear(x[a:a + m], weight), whole[a:a + m]) for a in (0, 1, 5, PROBE_ROWS))
                 for m in sizes]  # keeps[i]: a product of sizes[i] rows keeps its rows' bits
        shared_from = next((m for i, m in enumerate(sizes) if m <= SHARED_FROM_MAX and all(keeps[i:])), None)
        if shared_from == 1:
            return PLAIN
        solo = torch.cat([F.linear(x[r:r + 1], weight) for r in range(8)])
        single_rows = all(torch.equal(row_exact_linear(x[:m], weight), solo[:m]) for m in (2, 3, 8))
    return Linears(shared_from, single_rows)


# --- 3. attention ----------------------------------------------------------------------------------------------
class Segment(NamedTuple):
    start: int  # the run's first row in the batched step
    stop: int
    keys: torch.Tensor  # [b, heads, S+1, d]: the run's whole cache for this layer, after this step's update
    values: torch.Tensor
    mask: Any  # what the run's solo step hands its attention (None, or a 4D mask)


class Segments(list):
    """A batched step's keys (and values) for one layer: one ``Segment`` per run."""


class SegmentedCache(DynamicCache):
    """The cache of a batched step: each run's own ``DynamicCache`` behind its rows. ``update`` appends each run's
    slice of the new keys and values to that run's cache (what its solo step does) and returns ``Segments``."""

    def __init__(self, caches: list, rows: list[slice], masks: list):
        super().__init__()
        self.caches, self.rows, self.masks = caches, rows, masks

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        segments = Segments()
        for rows, cache, mask in zip(self.rows, self.caches, self.masks):
            keys, values = cache.update(key_states[rows], value_states[rows], layer_idx, *args, **kwargs)
            segments.append(Segment(rows.start, rows.stop, keys, values, mask))
        return segments, segments

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return max(c.get_seq_length(layer_idx) for c in self.caches)


_install_lock = threading.Lock()
_sdpa = None  # transformers' own sdpa attention, once wrapped


def install_segmented_attention() -> None:
    """Wrap transformers' registered ``sdpa`` attention once per process: a call whose keys are ``Segments`` runs
    each run's rows with its own keys, values and mask; any other call goes to the original unchanged (same
    function, same arguments), so no model's behaviour moves."""
    global _sdpa
    if _sdpa is not None:  # every batched step asks; only the first installs
        return
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import AttentionInterface

    with _install_lock:
        if _sdpa is not None:
            return
        current = AttentionInterface._global_mapping["sdpa"]
        if current is not sdpa_attention_forward:  # another library re-registered it: leave it alone
            raise RuntimeError("transformers' `sdpa` attention is not its own sdpa_attention_forward; "
                               "rows of several runs cannot share a forward")
        _sdpa = current

        def segmented_sdpa(module, query, key, value, attention_mask, *args, **kwargs):
            if not isinstance(key, Segments):
                return _sdpa(module, query, key, value, attention_mask, *args, **kwargs)
            outputs = [_sdpa(module, query[s.start:s.stop], s.keys, s.values, s.mask, *args, **kwargs)[0] for s in key]
            return torch.cat(outputs, dim=0), None

        AttentionInterface.register("sdpa", segmented_sdpa)


# --- the batched step ------------------------------------------------------------------------------------------
def batchable(model, model_inputs: dict) -> bool:
    """Whether a decode step's inputs can join a batched step: a listed model family on sdpa, one new token per row,
    a plain ``DynamicCache`` (every layer a ``DynamicLayer``: no sliding windows, quantization or offloading)."""
    config = model.config
    if config.is_encoder_decoder or config.model_type not in BATCHED_MODEL_TYPES:
        return False
    if getattr(config, "_attn_implementation", None) != "sdpa" or set(model_inputs) - BATCHED_INPUTS:
        return False
    cache = model_inputs.get("cache")
    input_ids = model_inputs.get("input_ids")
    return (type(cache) is DynamicCache and all(type(layer) is DynamicLayer for layer in cache.layers)
            and input_ids is not None and input_ids.dim() == 2 and input_ids.shape[1] == 1
            and model_inputs.get("position_ids") is not None
            and type(model_inputs.get("logits_to_keep", 1)) is int and model_inputs.get("logits_to_keep", 1) == 1)


def solo_mask(model, model_inputs: dict):
    """The mask a run's solo decode step hands its attention (``create_causal_mask`` on its own cache and inputs)."""
    from transformers.masking_utils import create_causal_mask

    ids = model_inputs["input_ids"]
    embeds = torch.empty(ids.shape[0], ids.shape[1], 1, dtype=model.dtype, device=ids.device)
    return create_causal_mask(config=model.config.get_text_config(), inputs_embeds=embeds,
                              attention_mask=model_inputs.get("attention_mask"), cache=model_inputs["cache"],
                              position_ids=model_inputs["position_ids"])


def batched_forward(model, steps: list[dict], linears: Linears) -> list:
    """One forward for the decode steps ``steps`` (each a run's ``prepare_inputs_for_generation`` output, all
    ``batchable``, the same ``output_hidden_states``); returns each run's outputs as its solo forward would
    (logits [b, 1, V], its own cache, hidden states when asked). ``linears``: ``probe``'s answer."""
    install_segmented_attention()
    sizes = [s["input_ids"].shape[0] for s in steps]
    ends = list(itertools.accumulate(sizes))
    rows = [slice(end - size, end) for size, end in zip(sizes, ends)]  # each run's rows of the batched step
    masks = [solo_mask(model, s) for s in steps]  # before any cache grows
    cache = SegmentedCache([s["cache"] for s in steps], rows, masks)
    input_ids = torch.cat([s["input_ids"] for s in steps])  # [B, 1]
    position_ids = torch.cat([s["position_ids"] for s in steps])  # [B, 1]
    hidden = bool(steps[0].get("output_hidden_states"))
    # a 4D mask is taken as prepared (create_causal_mask returns it as is); the segments carry the real ones
    placeholder = torch.ones(input_ids.shape[0], 1, 1, 1, dtype=torch.bool, device=input_ids.device)
    exact = contextlib.nullcontext() if linears.plain else RowExactLinear(sizes, linears)
    with exact:
        outputs = model(input_ids=input_ids, position_ids=position_ids, cache=cache, attention_mask=placeholder,
                        use_cache=True, logits_to_keep=1, output_hidden_states=hidden, return_dict=True)
    results = []
    for step, run_rows in zip(steps, rows):
        fields = {"logits": outputs.logits[run_rows], "cache": step["cache"]}
        if hidden:
            fields["hidden_states"] = tuple(h[run_rows] for h in outputs.hidden_states)
        results.append(type(outputs)(**fields))
    return results
