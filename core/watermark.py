"""Watermark detection (Kirchenbauer et al. 2023, transformers ``WatermarkDetector``): per generated token whether it
fell in the green list its context seeds, and the detector's z-score for the whole text.

The green list of a token is seeded by the ``context_width`` tokens before it (``lefthash``) or by those and the
token itself (``selfhash``), as ``WatermarkLogitsProcessor`` seeded it while generating; the prompt's last tokens
give the first generated tokens their context. The z-score is the detector's over the generated tokens alone (as
transformers advises: the prompt would dilute it), so it scores the tokens after the first ``context_width``.
"""

from __future__ import annotations

import torch
from transformers.generation import WatermarkDetector
from transformers.generation.configuration_utils import WatermarkingConfig

from .records import WatermarkReport


def detectable(watermarking_config) -> bool:
    """A green-list watermark ``WatermarkDetector`` can score (SynthID has a detector model of its own)."""
    return isinstance(watermarking_config, (dict, WatermarkingConfig))


def as_config(watermarking_config) -> WatermarkingConfig:
    if isinstance(watermarking_config, dict):
        return WatermarkingConfig.from_dict(watermarking_config)
    return watermarking_config


def detect(model_config, prompt: list[int], generated: list[int], watermarking_config,
           device: str | torch.device = "cpu") -> WatermarkReport:
    """Green-list membership of each of ``generated`` (after ``prompt``) and the detector's z-score."""
    config = as_config(watermarking_config)
    detector = WatermarkDetector(model_config, device, config)
    width = detector.processor.context_width
    selfhash = detector.processor.seeding_scheme == "selfhash"
    tokens = list(prompt) + list(generated)
    start = len(prompt)
    green = []
    for i in range(start, len(tokens)):
        end = i + 1 if selfhash else i  # selfhash seeds with the window ending in the token itself
        context = tokens[max(0, end - width):end]
        if len(context) < width:  # no context yet (the text's very first token): never scored
            green.append(False)
            continue
        prefix = torch.tensor(context, device=device)
        green.append(bool(detector._get_ngram_score_cached(prefix, tokens[i])))
    ids = torch.tensor([generated], device=device)
    if ids.shape[1] - width < 1:
        return WatermarkReport(green, None, None, 0, config.greenlist_ratio)
    out = detector(ids, return_dict=True)
    return WatermarkReport(green, float(out.z_score[0]), float(out.p_value[0]), int(out.num_tokens_scored[0]),
                           config.greenlist_ratio)




def reports(model, prompt_ids: list[list[int]], sequences: list[list[int]],
            watermarking_config) -> list[WatermarkReport]:
    """``detect`` on every returned sequence of a decoder-only run (sequences start with their prompt; with several
    returned rows per prompt, rows follow their prompt in order)."""
    per_prompt = max(len(sequences) // max(len(prompt_ids), 1), 1)
    out = []
    for i, seq in enumerate(sequences):
        prompt = prompt_ids[min(i // per_prompt, len(prompt_ids) - 1)]
        out.append(detect(model.config.get_text_config(), prompt, seq[len(prompt):], watermarking_config, model.device))
    return out


__all__ = ["WatermarkReport", "detect", "reports"]
