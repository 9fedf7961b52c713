"""A bounded share of Gradio's queue per session.

Gradio's queue has one size for everyone (``demo.queue(max_size=...)``): one client that sends requests faster than
they are served fills every place, and each visitor after it reads "Queue is full". ``apply`` wraps the queue's
``push`` so that a session with ``PLAYGROUND_SESSION_QUEUE`` requests already waiting gets that refusal for the next
one, worded for it, and the others keep their places. What counts is Gradio's own record of what waits (its event
queues per concurrency id), read at each push: nothing is kept here.

A session is what the client names (``session_hash``): a client that mints a new one per request is not held by
this, only by the queue's size, the per-session generation slot (``policy.SessionRuns``) and each request's bounds.
"""

from __future__ import annotations

import functools
import logging

from . import policy

log = logging.getLogger(__name__)


def waiting(queue, session: str | None) -> int:
    """Requests of ``session`` waiting in Gradio's ``queue`` (not those running)."""
    return sum(1 for event_queue in list(queue.event_queue_per_concurrency_id.values())
               for event in list(event_queue.queue) if event.session_hash == session)


def apply(demo) -> bool:
    """Wrap ``demo``'s queue ``push`` (once); False where Gradio's queue lacks what this reads (another version)."""
    queue = getattr(demo, "_queue", None)
    if queue is None or not hasattr(queue, "event_queue_per_concurrency_id") or getattr(queue, "_shared", False):
        if queue is None or not hasattr(queue, "event_queue_per_concurrency_id"):
            log.warning("queue_share: Gradio's queue has no per-concurrency-id queues here; sessions share it freely")
        return False
    push = queue.push

    @functools.wraps(push)
    async def bounded(body, request, username):
        limit = policy.bound("session_queue")
        session = getattr(body, "session_hash", None)
        if session is not None and waiting(queue, session) >= limit:
            return (False, f"This page already has {limit} requests waiting, the most one visitor may on this server "
                           f"(set by {policy.BOUND['session_queue'].env}); wait for them to run.", "queue_full")
        return await push(body, request, username)

    queue.push = bounded
    queue._shared = True
    return True
