"""Streaming: transformers' own streamers, unchanged, print what ``core.generate`` returns; ``core.stream``'s events
end with the returned texts; cancelling from another thread stops within one step; closing the stream stops the
worker thread."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer, TextStreamer

import core


@pytest.fixture(scope="module")
def chat(embedded):
    return embedded.tokenizer.apply_chat_template([{"role": "user", "content": "Say hello in French."}],
                                                  add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=True)["input_ids"]


def new_text(tokenizer, sequences, prompt_len: int) -> list[str]:
    return tokenizer.batch_decode(sequences[:, prompt_len:], skip_special_tokens=True)


# --- transformers' streamers ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [dict(), dict(do_sample=True, top_k=30, temperature=0.8)])
def test_text_streamer_prints_the_returned_text(embedded, chat, capsys, kwargs):
    tok = embedded.tokenizer
    torch.manual_seed(1)
    result = core.generate(embedded.model, chat, streamer=TextStreamer(tok, skip_prompt=True, skip_special_tokens=True),
                           max_new_tokens=12, **kwargs)
    ours = capsys.readouterr().out
    torch.manual_seed(1)
    embedded.model.generate(chat, streamer=TextStreamer(tok, skip_prompt=True, skip_special_tokens=True),
                            max_new_tokens=12, **kwargs)
    theirs = capsys.readouterr().out
    assert ours == new_text(tok, result.sequences, chat.shape[1])[0] + "\n"
    assert ours == theirs


@pytest.mark.slow
def test_text_iterator_streamer_yields_the_returned_text(embedded, chat):
    tok = embedded.tokenizer
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=120)
    box = {}
    worker = threading.Thread(target=lambda: box.setdefault(
        "result", core.generate(embedded.model, chat, streamer=streamer, max_new_tokens=12)))
    worker.start()
    pieces = list(streamer)
    worker.join()
    assert len(pieces) > 1  # it streamed, not one final chunk
    assert "".join(pieces) == new_text(tok, box["result"].sequences, chat.shape[1])[0]


# --- core.stream ------------------------------------------------------------------------------------------------
STREAMED = {
    "greedy_search": dict(),
    "sample": dict(do_sample=True, top_p=0.9, num_return_sequences=2),
    "beam_search": dict(num_beams=3, num_return_sequences=2),
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(STREAMED))
def test_stream_ends_with_the_returned_texts(embedded, chat, mode):
    tok = embedded.tokenizer
    torch.manual_seed(2)
    events = list(core.stream(embedded.model, chat, tokenizer=tok, max_new_tokens=6, **STREAMED[mode]))
    *steps, last = events
    assert last.done and not any(e.done for e in steps)
    returned = new_text(tok, last.result.sequences, chat.shape[1])
    assert last.texts == returned == last.result.trace.texts
    assert [e.record.step for e in steps] == list(range(len(steps)))
    # transformers gives the same sequences
    torch.manual_seed(2)
    reference = embedded.model.generate(chat, max_new_tokens=6, **STREAMED[mode])
    assert last.result.sequences.tolist() == reference.tolist()


def test_stream_without_tokenizer_streams_ids(tiny_model, prompt):
    events = list(core.stream(tiny_model, prompt, max_new_tokens=5))
    assert [len(e.tokens[0]) for e in events] == [1, 2, 3, 4, 5, 5]
    assert events[-1].tokens[0] == events[-1].result.sequences[0, prompt.shape[1]:].tolist()


def test_a_consumer_that_falls_behind_is_told_how_many_events_wait(tiny_model, prompt):
    """``behind`` counts the events queued after this one: a slow consumer (a Gradio handler under load) may show
    only the newest, and still gets every record and the same end."""
    fast = list(core.stream(tiny_model, prompt, max_new_tokens=6, min_new_tokens=6))
    slow = []
    for event in core.stream(tiny_model, prompt, max_new_tokens=6, min_new_tokens=6):
        if not slow:
            time.sleep(0.5)  # the worker runs ahead meanwhile
        slow.append(event)
    assert any(e.behind for e in slow) and slow[-1].behind == 0
    assert [e.record.step for e in slow if e.record] == [e.record.step for e in fast if e.record]
    assert slow[-1].tokens == fast[-1].tokens


def test_stream_run_yields_the_newest_step_only_when_behind(tiny_model, prompt):
    """The tab's view is yielded once for the steps that queued while its consumer was busy; every record is in."""
    from playground.runs import Run, stream_run

    class Loaded:
        model, tokenizer, name = tiny_model, None, "tiny"

    run = Run("main", "greedy", dict(max_new_tokens=6, min_new_tokens=6, do_sample=False))
    seen = []
    for shown in stream_run(run, Loaded(), prompt, None, generator=None):
        if not seen:
            time.sleep(0.5)
        seen.append(len(shown.steps))
    assert len(seen) < 7 and seen[-1] == 6 and run.done and len(run.tokens[0]) == 6


def test_stream_reraises_errors_in_the_caller(tiny_model, prompt):
    with pytest.raises(ValueError, match="`top_p` must be in"):
        list(core.stream(tiny_model, prompt, max_new_tokens=5, do_sample=True, top_p=3.0))


# --- cancel and close -------------------------------------------------------------------------------------------
class Pace(StoppingCriteria):
    """Counts the steps and slows each one down a little, so that another thread can act while it runs."""

    def __init__(self, seconds: float = 0.01):
        self.seconds, self.calls = seconds, 0

    def __call__(self, input_ids, scores, **kwargs):
        self.calls += 1
        time.sleep(self.seconds)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def test_cancel_from_another_thread_stops_at_that_step(tiny_model, prompt):
    """The canceller sets the event while step N is being recorded: step N is the last one."""
    cancel, at_step = threading.Event(), threading.Event()
    n = 4

    class Signal(core.ListRecorder):
        def on_step(self, record):
            super().on_step(record)
            if record.step == n:
                at_step.set()
                assert cancel.wait(10)  # hold step N until the other thread has cancelled

    def canceller():
        at_step.wait(10)
        cancel.set()

    thread = threading.Thread(target=canceller)
    thread.start()
    recorder = Signal(top_n=2)
    result = core.generate(tiny_model, prompt, recorder=recorder, cancel=cancel, max_new_tokens=50)
    thread.join()
    assert len(recorder.steps) == n + 1
    assert result.sequences.shape[1] == prompt.shape[1] + n + 1
    full = core.generate(tiny_model, prompt, max_new_tokens=n + 1).sequences
    assert result.sequences.tolist() == full.tolist()  # cancelling keeps what was generated


def test_cancel_while_streaming_stops_within_one_step(tiny_model, prompt):
    pace, cancel = Pace(), threading.Event()
    events = core.stream(tiny_model, prompt, cancel=cancel, max_new_tokens=1000,
                         stopping_criteria=StoppingCriteriaList([pace]))
    for event in events:
        if not event.done and event.record.step == 3:
            done_when_cancelled = pace.calls
            cancel.set()
        if event.done:
            last = event
    steps = last.result.sequences.shape[1] - prompt.shape[1]
    assert steps <= done_when_cancelled + 1  # the step under way when cancelled is the last
    assert steps < 1000


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith("(work)")]


def test_closing_the_stream_stops_the_worker(tiny_model, prompt):
    pace = Pace()
    before = set(_workers())
    events = core.stream(tiny_model, prompt, max_new_tokens=1000, stopping_criteria=StoppingCriteriaList([pace]))
    for i, _ in enumerate(events):
        if i == 2:
            break
    assert set(_workers()) - before  # the worker is running
    events.close()  # what a UI does when the user leaves: the generator's finally cancels, and waits for nothing
    deadline = time.monotonic() + 10
    while set(_workers()) - before and time.monotonic() < deadline:  # the worker stops on its own within a step
        time.sleep(0.01)
    assert not set(_workers()) - before
    calls = pace.calls
    assert calls < 1000
    time.sleep(0.1)
    assert pace.calls == calls  # no step ran after close


def test_a_dropped_stream_can_be_garbage_collected_and_stops(tiny_model, prompt):
    import gc

    pace = Pace()
    events = core.stream(tiny_model, prompt, max_new_tokens=1000, stopping_criteria=StoppingCriteriaList([pace]))
    next(events)
    del events
    gc.collect()  # closing a suspended generator runs its finally block
    time.sleep(0.1)
    calls = pace.calls
    time.sleep(0.1)
    assert pace.calls == calls < 1000
