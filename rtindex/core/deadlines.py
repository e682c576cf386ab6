"""A search's deadline: an absolute ``time.monotonic()`` instant (None: no deadline),
checked between units of work (a chunk of queries, a lock-step step), so a caller that
gave up does not keep the workers busy with a batch nobody waits for."""

from __future__ import annotations

import time


class SearchDeadlineExceeded(TimeoutError):
    """The search's deadline passed before it finished; its partial work is dropped."""


def check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise SearchDeadlineExceeded("search: the deadline passed before the batch was searched; "
                                     "give the call more time or send fewer queries per call")
