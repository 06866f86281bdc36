"""The chat agent (server side, DESIGN §6): a message becomes a weblet command — from server-side manifests only.

- ``tools``: the tool list per message (visible panels, enabled manifests, built-ins);
- ``prompt``: the model's system prompt, manifest text as quoted, capped data;
- ``router``: the deterministic router (names, slugs, example phrases, simple arguments);
- ``dispatch``: built-ins, a backend's ``invoke``, or a page's ``commands.handle``;
- ``store``: "always" grants and the append-only audit log;
- ``service``: ``AgentService`` (``kernel.services.agent``) and ``HostAgent`` (``E(host).agent()``).

See docs/agent.md.
"""

from __future__ import annotations

from .prompt import Prompt, build_prompt
from .router import Routed, route
from .service import AgentService, AgentSettings, CallError, HostAgent, agent_hook
from .tools import ArgumentError, Tool, build_tools, check_args

__all__ = [
    "AgentService", "AgentSettings", "ArgumentError", "CallError", "HostAgent", "Prompt", "Routed", "Tool",
    "agent_hook", "build_prompt", "build_tools", "check_args", "route",
]  # fmt: skip
