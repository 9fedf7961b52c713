"""Diverse (group) beam search: ``core.generate`` gives transformers 4.55.4's tokens and sequence scores (5.x no
longer runs it), on the tiny model of ``conftest.tiny_llama(0)``. The recorded tree is well formed per group, and
each node's diversity penalty is ``diversity_penalty`` times the times earlier groups took its token at that step.

The expected values are 4.55.4's ``sequences`` and ``sequences_scores`` for ``CASES``, made by hand with the recipe
in ``tests/oracle/README.md``.

(4.55.4 refuses ``diversity_penalty=0`` with several groups, so every case has a positive penalty.)
"""

from __future__ import annotations

import pytest
import torch

import core
from conftest import ListStreamer
from core.strategies.group_beam import HammingDiversityLogitsProcessor

PROMPT = torch.tensor([[1, 5, 9, 13, 17, 21]])
LEFT_PADDED = torch.tensor([[0, 0, 1, 5, 9, 13], [1, 7, 3, 22, 40, 8]])
PAD = 0

# (input ids, settings, 4.55.4's sequences, 4.55.4's sequences_scores)
CASES = [
    (PROMPT, dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, max_new_tokens=10, num_return_sequences=2),
     [[1, 5, 9, 13, 17, 21, 11, 40, 41, 55, 61, 15, 12, 49, 20, 57],
      [1, 5, 9, 13, 17, 21, 11, 40, 41, 55, 61, 15, 12, 49, 19, 38]],
     [-3.9328589, -3.9348118]),
    (PROMPT, dict(num_beams=6, num_beam_groups=3, diversity_penalty=0.5, max_new_tokens=12, eos_token_id=38,
                  num_return_sequences=3),
     [[1, 5, 9, 13, 17, 21, 31, 48, 43, 58, 45, 46, 6, 40, 41, 55, 38, 0],
      [1, 5, 9, 13, 17, 21, 31, 48, 43, 58, 45, 46, 6, 40, 41, 55, 61, 15],
      [1, 5, 9, 13, 17, 21, 60, 27, 6, 40, 41, 55, 38, 0, 0, 0, 0, 0]],
     [-3.9243302, -3.9263437, -3.9279616]),
    (PROMPT, dict(num_beams=4, num_beam_groups=4, diversity_penalty=2.0, max_new_tokens=12, eos_token_id=[36, 6],
                  early_stopping=True),
     [[1, 5, 9, 13, 17, 21, 60, 33, 46, 46, 46, 47, 34, 32, 36]],
     [-3.9321942]),
    (PROMPT, dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.3, max_new_tokens=12, eos_token_id=6,
                  length_penalty=-0.5, early_stopping='never', num_return_sequences=2),
     [[1, 5, 9, 13, 17, 21, 45, 46, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0],
      [1, 5, 9, 13, 17, 21, 60, 27, 38, 7, 12, 49, 20, 57, 52, 32, 36, 33]],
     [-20.6338806, -163.3814545]),
    (PROMPT, dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, max_new_tokens=12, eos_token_id=38,
                  early_stopping='never', length_penalty=2.0, num_return_sequences=4),
     [[1, 5, 9, 13, 17, 21, 11, 40, 41, 55, 61, 15, 12, 49, 19, 26, 36, 33],
      [1, 5, 9, 13, 17, 21, 11, 40, 41, 55, 61, 15, 12, 49, 19, 26, 36, 60],
      [1, 5, 9, 13, 17, 21, 60, 27, 6, 40, 41, 55, 11, 42, 56, 33, 49, 20],
      [1, 5, 9, 13, 17, 21, 60, 27, 6, 40, 41, 55, 11, 42, 56, 33, 40, 41]],
     [-0.3275959, -0.3276158, -0.3280385, -0.3280908]),
    (PROMPT, dict(num_beams=6, num_beam_groups=2, diversity_penalty=0.8, max_new_tokens=12, eos_token_id=38,
                  no_repeat_ngram_size=2, early_stopping=True, num_return_sequences=2),
     [[1, 5, 9, 13, 17, 21, 31, 48, 43, 36, 6, 40, 2, 47, 34, 32, 36, 33],
      [1, 5, 9, 13, 17, 21, 31, 48, 43, 36, 6, 40, 2, 47, 34, 32, 36, 11]],
     [-3.9153013, -3.9164107]),
    (LEFT_PADDED, dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.7, max_new_tokens=10, eos_token_id=[36,
                       38], num_return_sequences=2),
     [[0, 0, 1, 5, 9, 13, 23, 31, 48, 43, 58, 28, 9, 42, 30, 21],
      [0, 0, 1, 5, 9, 13, 23, 31, 48, 43, 58, 28, 9, 42, 30, 32],
      [1, 7, 3, 22, 40, 8, 63, 18, 49, 20, 57, 52, 32, 36, 0, 0],
      [1, 7, 3, 22, 40, 8, 63, 18, 49, 20, 57, 52, 27, 36, 0, 0]],
     [-3.906388, -3.9095883, -3.9201398, -3.9268763]),
    (LEFT_PADDED, dict(num_beams=6, num_beam_groups=3, diversity_penalty=1.5, max_new_tokens=10, eos_token_id=6,
                       early_stopping=True, length_penalty=1.5),
     [[0, 0, 1, 5, 9, 13, 23, 31, 48, 43, 58, 28, 9, 42, 30, 21],
      [1, 7, 3, 22, 40, 8, 36, 14, 20, 57, 52, 32, 36, 11, 42, 34]],
     [-1.2353084, -1.2405888]),
    # small penalties: penalised tokens stay among the candidates, so the tree shows them
    (PROMPT, dict(num_beams=6, num_beam_groups=3, diversity_penalty=0.02, max_new_tokens=10, eos_token_id=38,
                  num_return_sequences=3),
     [[1, 5, 9, 13, 17, 21, 60, 27, 6, 40, 41, 55, 38, 0, 0, 0],
      [1, 5, 9, 13, 17, 21, 45, 46, 47, 34, 32, 36, 6, 40, 41, 55],
      [1, 5, 9, 13, 17, 21, 60, 27, 6, 40, 41, 55, 11, 42, 56, 33]],
     [-3.9279616, -3.9280057, -3.9285426]),
    (LEFT_PADDED, dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.01, max_new_tokens=8, eos_token_id=[36, 6],
                       early_stopping=True, num_return_sequences=2),
     [[0, 0, 1, 5, 9, 13, 23, 31, 48, 43, 58, 28, 9, 42],
      [0, 0, 1, 5, 9, 13, 23, 31, 48, 43, 58, 28, 9, 43],
      [1, 7, 3, 22, 40, 8, 63, 18, 17, 11, 42, 56, 33, 49],
      [1, 7, 3, 22, 40, 8, 63, 18, 17, 11, 42, 34, 27, 38]],
     [-3.9007897, -3.9070332, -3.9301949, -3.9315307]),
]


pytestmark = pytest.mark.usefixtures("one_thread")


def run(model, ids, **kwargs) -> core.GenerationResult:
    attention_mask = (ids != PAD).long() if (ids == PAD).any() else None
    return core.generate(model, ids, attention_mask=attention_mask, recorder=core.ListRecorder(), **kwargs)


def eos_set(model, kwargs) -> set[int]:
    eos = kwargs.get("eos_token_id", model.generation_config.eos_token_id)
    return set(eos if isinstance(eos, list) else [eos])


def path(nodes: dict[int, core.BeamNode], node_id: int) -> list[int]:
    tokens = []
    while node_id != -1:
        tokens.append(nodes[node_id].token_id)
        node_id = nodes[node_id].parent
    return tokens[::-1]


def returned_nodes(trace, sequences, new_from, num_return, eos) -> list[core.BeamNode]:
    """The finished node each returned row comes from. 4.55.4 writes a hypothesis without its EOS, then the
    first EOS token (if the row has room), then padding: so a path ending in any EOS spells the row up to it.
    Two groups may finish the same tokens: rows come best first, so each takes the best node not yet taken."""
    nodes = {n.node_id: n for step in trace.steps for n in step.beam}
    found = []
    for r, row in enumerate(sequences.tolist()):
        new = row[new_from:]
        matches = {}
        for node in nodes.values():
            if node.fate != "finished" or node.batch != r // num_return or node in found:
                continue
            p = path(nodes, node.node_id)
            spelled = p[:-1] if p[-1] in eos else p
            if new[:len(spelled)] == spelled and set(new[len(spelled):]) <= {PAD, *eos}:
                matches.setdefault(len(spelled), []).append(node)
        assert matches, f"row {r}: no finished path spells {new}"
        found.append(max(matches[max(matches)], key=lambda n: n.final_score))
    return found


def check_tree(trace, batch_size, num_beams, num_groups, diversity_penalty, length_penalty=1.0):
    """Parents exist, in the same batch row and group; a group that expands keeps K / G beams at every step but
    the last (where the open beams are finalized); the diversity penalty counts the tokens earlier groups
    appended (checked before the last step, whose kept beams were re-marked by the finalization)."""
    group_size = num_beams // num_groups
    seen: dict[int, core.BeamNode] = {}
    last = len(trace.steps) - 1
    for i, step in enumerate(trace.steps):
        assert len(step.rows) == batch_size * num_beams
        for node in step.beam:
            assert node.node_id not in seen
            if node.parent != -1:
                parent = seen[node.parent]
                assert (parent.batch, parent.group) == (node.batch, node.group)
            assert node.normalized_score == pytest.approx(node.score / (i + 1) ** length_penalty, rel=1e-5)
            assert (node.final_score is not None) == (node.fate == "finished")
        seen.update({n.node_id: n for n in step.beam})
        if i == last:
            # the open beams were offered as hypotheses (now finished or pruned), except in groups that
            # finished at this very step, whose running beams stay kept and are dropped
            for b in range(batch_size):
                for g in range(num_groups):
                    kept = sum(n.fate == "kept" for n in step.beam if (n.batch, n.group) == (b, g))
                    assert kept in (0, group_size)
            continue
        for b in range(batch_size):
            appended: list[list[int]] = []  # per earlier group, the tokens it appended this step (padding once done)
            for g in range(num_groups):
                mine = [n for n in step.beam if (n.batch, n.group) == (b, g)]
                if mine:
                    assert sum(n.fate == "kept" for n in mine) == group_size
                for n in mine:
                    expected = diversity_penalty * sum(tokens.count(n.token_id) for tokens in appended)
                    assert n.diversity_penalty == pytest.approx(expected)
                appended.append([n.token_id for n in mine if n.fate == "kept"] if mine else [PAD] * group_size)


@pytest.mark.parametrize("ids,kwargs,sequences,scores", CASES,
                         ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else "")
def test_group_beam_search_matches_transformers_4_55_4(tiny_model, ids, kwargs, sequences, scores):
    result = run(tiny_model, ids, **kwargs)
    assert result.trace.strategy == "group_beam_search"
    assert result.sequences.tolist() == sequences

    batch_size, num_return = ids.shape[0], kwargs.get("num_return_sequences", 1)
    check_tree(result.trace, batch_size, kwargs["num_beams"], kwargs["num_beam_groups"], kwargs["diversity_penalty"],
               kwargs.get("length_penalty", 1.0))
    ends = returned_nodes(result.trace, result.sequences, ids.shape[1], num_return, eos_set(tiny_model, kwargs))
    assert [n.final_score for n in ends] == pytest.approx(scores, rel=1e-6)
    nodes = {n.node_id: n for step in result.trace.steps for n in step.beam}
    assert result.trace.steps[-1].best == [path(nodes, n.node_id) for n in ends]
    assert result.trace.steps[-1].best_nodes == [n.node_id for n in ends]
    for step in result.trace.steps:  # every step's best rows are the paths to the nodes it names
        assert step.best == [path(nodes, n) if n != -1 else [] for n in step.best_nodes]


def test_recording_off_gives_the_same_tokens(tiny_model):
    ids, kwargs, sequences, _ = CASES[6]
    result = core.generate(tiny_model, ids, attention_mask=(ids != PAD).long(), **kwargs)
    assert result.trace is None
    assert result.sequences.tolist() == sequences


def test_only_later_groups_are_penalised(tiny_model):
    # group 0 sees no earlier group; a small penalty keeps group 1's penalised tokens among its candidates
    result = run(tiny_model, PROMPT, num_beams=4, num_beam_groups=2, diversity_penalty=0.02, max_new_tokens=6)
    check_tree(result.trace, 1, 4, 2, 0.02)
    nodes = [n for step in result.trace.steps for n in step.beam]
    assert {n.diversity_penalty for n in nodes if n.group == 0} == {0.0}
    assert any(n.diversity_penalty > 0 for n in nodes if n.group == 1)
    effects = [e.processor for step in result.trace.steps for row in step.rows for e in row.effects]
    assert set(effects) == {"HammingDiversityLogitsProcessor"}


def test_hamming_diversity_penalises_earlier_groups_tokens():
    # synthetic scores: batch of 2, 4 beams in 2 groups, vocabulary of 6
    hamming = HammingDiversityLogitsProcessor(0.5, num_beams=4, num_beam_groups=2)
    current = torch.tensor([3, 3, 0, 0, 1, 5, 0, 0])  # group 0 of row 0 took 3 twice; of row 1, 1 and 5
    scores = torch.zeros(4, 6)  # group 1's rows: 2 per batch row
    out = hamming.at(current, 1)(None, scores)
    assert out[:2].tolist() == [[0, 0, 0, -1.0, 0, 0]] * 2
    assert out[2:].tolist() == [[0, -0.5, 0, 0, 0, -0.5]] * 2
    assert hamming.at(current, 0)(None, scores) is scores  # the first group is left alone


def test_hamming_diversity_validates_its_settings():
    with pytest.raises(ValueError, match="`diversity_penalty` must be a float > 0"):
        HammingDiversityLogitsProcessor(0.0, 4, 2)
    with pytest.raises(ValueError, match=r"`num_beam_groups` must be an integer in \[2, num_beams \(4\)\]"):
        HammingDiversityLogitsProcessor(1.0, 4, 5)


def test_stream_ends_on_the_returned_hypotheses(tiny_model):
    ids, kwargs, sequences, _ = CASES[1]
    events = list(core.stream(tiny_model, ids, **kwargs))
    assert events[-1].done and events[-1].result.sequences.tolist() == sequences
    eos = eos_set(tiny_model, kwargs)
    for best, row in zip(events[-1].tokens, sequences):
        spelled = best[:-1] if best[-1] in eos else best
        new = row[ids.shape[1]:]
        assert new[:len(spelled)] == spelled and set(new[len(spelled):]) <= {PAD, *eos}
    assert all(len(e.tokens) == 3 for e in events[:-1])


def test_trace_json_round_trip(tiny_model):
    ids, kwargs, _, _ = CASES[6]
    trace = run(tiny_model, ids, **kwargs).trace
    again = core.Trace.from_json(trace.to_json())
    assert again == trace
    assert {n.group for step in again.steps for n in step.beam} == {0, 1}



def test_streamer_gets_the_prompt_then_the_returned_best_row(tiny_model):
    ids, kwargs, sequences, _ = CASES[6]
    streamer = ListStreamer()
    core.generate(tiny_model, ids, attention_mask=(ids != PAD).long(), streamer=streamer, **kwargs)
    assert streamer.puts == [ids[0].tolist(), sequences[0][ids.shape[1]:]]
    assert streamer.ended == 1
