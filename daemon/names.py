"""Pet names, special names and dotted name paths: what an agent may call things.

A *pet name* is an agent's private name for a formula, stored in its pet store.
A *special name* is an upper-case, read-only name every agent sees on top of its
pet store (``SELF``, ``HOST``, ...); it is never stored. A *name path*
``a.b.c`` walks through directories: the first part may be a special name, every
later part is a pet name.

Every refusal is one exception type, :class:`InvalidName`, whose message is a
single line saying what is allowed, fit to show a user as is.
"""

from __future__ import annotations

import re

__all__ = [
    "InvalidName",
    "MAX_PET_NAME_LENGTH",
    "PATH_SEPARATOR",
    "PET_NAME_PATTERN",
    "SPECIAL_NAMES",
    "is_pet_name",
    "is_special_name",
    "parse_path",
    "validate_name_or_special",
    "validate_pet_name",
]

MAX_PET_NAME_LENGTH = 128
# Lower case only, so that names mean the same on case-insensitive file systems
# and never collide with the upper-case special names.
PET_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,127}$"
# fullmatch without the anchors: Python's ``$`` also matches before a final
# newline, which would let "name\n" through.
_PET_NAME = re.compile(PET_NAME_PATTERN[1:-1])

SPECIAL_NAMES: frozenset[str] = frozenset(
    {
        "SELF",  # the agent's own handle
        "AGENT",  # the agent's own powers
        "HOST",  # a guest's host, as a handle (never the host's powers)
        "ENDO",  # the daemon's bootstrap surface
        "NONE",  # least authority
        "MAIN",  # the agent's main worker
        "INFO",  # the inspector
        "MAIL",  # the agent's mailbox
    }
)

PATH_SEPARATOR = "."

# A user may paste anything; keep the echoed name short enough for one line.
_MAX_ECHO = 40

_PET_NAME_RULE = (
    "use lower-case letters, digits and '-', starting with a letter or digit, "
    f"at most {MAX_PET_NAME_LENGTH} characters"
)


class InvalidName(ValueError):
    """A name or name path that is not allowed where it was given."""


def _echo(name: object) -> str:
    text = repr(name)
    if len(text) > _MAX_ECHO:
        text = text[: _MAX_ECHO - 1] + "…"
    return text


def is_pet_name(name: object) -> bool:
    """Whether ``name`` is a well-formed pet name (special names are not)."""
    return isinstance(name, str) and _PET_NAME.fullmatch(name) is not None


def is_special_name(name: object) -> bool:
    """Whether ``name`` is one of the read-only special names."""
    return isinstance(name, str) and name in SPECIAL_NAMES


def validate_pet_name(name: object) -> str:
    """Return ``name`` if it is a pet name; raise :class:`InvalidName` otherwise.

    Special names are refused here: they are read-only and cannot be written.
    """
    if is_pet_name(name):
        return name  # type: ignore[return-value]
    if is_special_name(name):
        raise InvalidName(f"{_echo(name)} is a special name and read-only: {_PET_NAME_RULE}")
    if not isinstance(name, str):
        raise InvalidName(f"invalid pet name {_echo(name)}: a name must be a string")
    raise InvalidName(f"invalid pet name {_echo(name)}: {_PET_NAME_RULE}")


def validate_name_or_special(name: object) -> str:
    """Return ``name`` if it is a pet name or a special name; raise otherwise."""
    if is_pet_name(name) or is_special_name(name):
        return name  # type: ignore[return-value]
    if not isinstance(name, str):
        raise InvalidName(f"invalid name {_echo(name)}: a name must be a string")
    raise InvalidName(
        f"invalid name {_echo(name)}: {_PET_NAME_RULE}; "
        f"or one of the special names {', '.join(sorted(SPECIAL_NAMES))}"
    )


def parse_path(path: object) -> list[str]:
    """Split a dotted name path ``"a.b.c"`` into its parts, each checked.

    The first part may be a special name (``"SELF.x"``); every later part must
    be a pet name. Empty parts (``""``, ``"a..b"``, ``".a"``, ``"a."``) are
    refused.
    """
    if not isinstance(path, str):
        raise InvalidName(f"invalid name path {_echo(path)}: a path must be a string")
    parts = path.split(PATH_SEPARATOR)
    for index, part in enumerate(parts):
        if part == "":
            raise InvalidName(
                f"invalid name path {_echo(path)}: empty part; "
                "write names separated by single dots, like 'a.b.c'"
            )
        if index == 0:
            if not is_special_name(part) and not is_pet_name(part):
                raise InvalidName(f"invalid name path {_echo(path)}: {_echo(part)}: {_PET_NAME_RULE}")
        elif not is_pet_name(part):
            why = "special names may only start a path" if is_special_name(part) else _PET_NAME_RULE
            raise InvalidName(f"invalid name path {_echo(path)}: {_echo(part)}: {why}")
    return parts
