"""The API weblet backends, caplets and evaluated code program against.

    from ocapd.sdk import E, Far

    def make(powers, context):
        return Far("Counter", incr=..., get=...)

This name is stable: the layers beneath it may move, ``ocapd.sdk`` keeps
offering the same names. Every worker can import it, whatever its power
level. What each name does is documented in docs/weblets.md.
"""

from __future__ import annotations

from ocapd.captp import E, Far, Promise, RemoteError, Tagged, far, is_remotable, make_promise_kit

__all__ = ["E", "Far", "Promise", "RemoteError", "Tagged", "far", "is_remotable", "make_promise_kit"]
