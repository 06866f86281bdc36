"""The counter weblet's backend: one count, kept in the worker's memory.

The worker calls ``make(powers, context)`` and hands the result to the page
as ``app``. The count lives as long as the worker does; after a restart it
starts again from zero (ocapd keeps recipes, not heap state).

``invoke(name, args)`` is how an agent drives the weblet: the daemon calls it
with a command the manifest declares (``increment``, which changes the count
and needs the user's Allow, and ``value``, marked ``readOnly``).
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

    def invoke(name: str, args: dict[str, Any]) -> Any:
        """Run one of the manifest's commands for an agent."""
        if name == "increment":
            by = args.get("by", 1) if isinstance(args, dict) else 1
            if isinstance(by, bool) or not isinstance(by, int) or not 1 <= by <= 1000:
                raise ValueError("increment: 'by' is a whole number from 1 to 1000")
            nonlocal count
            count += by
            return {"count": count}
        if name == "value":
            return {"count": count}
        raise LookupError(f"the counter has no command {name!r}")

    return Far("Counter", incr=incr, get=get, invoke=invoke)
