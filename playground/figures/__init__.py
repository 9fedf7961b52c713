"""Record -> figure builders for the playground tabs: pure functions of ``core`` records (a list of
``StepRecord`` or a ``Trace``), safe to call after every streamed step and on no records at all.
Each module has a ``CAPTION`` for newcomers. Plotly and networkx only (and the smoothing factor's sampler, which its
curve calls); no Gradio here."""

from . import (beam_tree, cache, candidates, compare, contrastive, dola, funnel, lens, smoothing, speculative, tokens,
               watch)
from .beam_tree import beam_tree_figure, node_count, returned_paths
from .cache import cache_figure, divergence_index
from .candidates import candidates_figure, processor_summary
from .common import PLOT_CONFIG, figure_json
from .compare import tokens_per_second_figure, tokens_per_second
from .contrastive import contrastive_figure
from .dola import dola_figure
from .funnel import entropy_figure, funnel_figure, watermark_figure
from .lens import lens_figure, lens_step_figure
from .smoothing import smoothing_figure
from .speculative import acceptance_rate, speculative_figure, timing_figure
from .tokens import ALTERNATIVES_HEADERS, alternatives_table, tokens_html
from .watch import watched_figure

# what each figure shows, in words a newcomer can follow (for the tabs' captions)
CAPTIONS = {
    "beam_tree": beam_tree.CAPTION, "candidates": candidates.CAPTION, "contrastive": contrastive.CAPTION,
    "dola": dola.CAPTION, "speculative": speculative.CAPTION, "timing": speculative.TIMING_CAPTION,
    "cache": cache.CAPTION, "tokens": tokens.CAPTION, "compare": compare.CAPTION, "funnel": funnel.CAPTION,
    "entropy": funnel.RUN_CAPTION, "watermark": funnel.WATERMARK_CAPTION, "lens": lens.CAPTION,
    "lens_step": lens.STEP_CAPTION, "watch": watch.CAPTION, "smoothing": smoothing.CAPTION,
}

__all__ = [
    "beam_tree_figure", "node_count", "returned_paths", "candidates_figure", "processor_summary",
    "contrastive_figure", "dola_figure", "speculative_figure", "timing_figure", "acceptance_rate",
    "cache_figure", "divergence_index", "tokens_html", "alternatives_table", "ALTERNATIVES_HEADERS",
    "tokens_per_second_figure", "tokens_per_second", "funnel_figure", "entropy_figure", "watermark_figure", "funnel",
    "PLOT_CONFIG",
    "figure_json", "CAPTIONS", "lens_figure", "lens_step_figure", "watched_figure", "smoothing_figure",
    "beam_tree", "cache", "candidates", "compare", "contrastive", "dola", "lens", "smoothing", "speculative", "tokens",
    "watch",
]
