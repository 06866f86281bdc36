"""The counter weblet's backend: one count, kept in the worker's memory.

The worker calls ``make(powers, context)`` and hands the result to the page
as ``app``. The count lives as long as the worker does; after a restart it
starts again from zero (ocapd keeps recipes, not heap state).
"""

from typing import Any

from ocapd.sdk import Far


def make(powers: Any, context: Any) -> Any:
    count = 0

    def incr() -> int:
        """Add one; return the new count."""
        nonlocal count
        count += 1
        return count

    def get() -> int:
        """The current count."""
        return count

    return Far("Counter", incr=incr, get=get)
