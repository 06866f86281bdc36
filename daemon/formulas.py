"""The catalogue of capability types: one immutable pydantic model per formula type.

A formula is a recipe: plain data ``{type, ...}`` stored under a random 256-bit
id. The daemon's maker for its ``type`` turns it into a live value (its
incarnation); heap state is never persisted, recipes are. A field that names
another formula holds that formula's id, and ``DEPENDS_ON`` lists those fields:
"this dies if that dies". Cancelling a formula cancels every formula whose
:func:`dependencies` include it.

Formulas are stored as JSON (``formula_to_dict``) and read back with
:func:`parse_formula`. The one bytes field, ``marshal.body``, travels through
JSON as base64 text.

Adding a capability type = one model here (and in ``Formula``) + one row in
``catalogue.MAKERS``, the table that maps each model to the maker that
incarnates it. Every type has a maker: a type is added when an issue needs it
never ahead.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

from .names import validate_name_or_special, validate_pet_name

__all__ = [
    "FORMULA_ADAPTER", "FORMULA_TYPES", "ContentHash", "Formula", "FormulaId",
    "dependencies", "formula_to_dict", "is_formula_id", "new_formula_id", "parse_formula",
    "HostFormula", "GuestFormula", "HandleFormula", "PetStoreFormula", "DirectoryFormula",
    "MailboxStoreFormula", "WorkerFormula", "EvalFormula", "MakeUnconfinedFormula",
    "MakeBundleFormula", "MarshalFormula", "ReadableBlobFormula", "TextStoreFormula", "LookupFormula",
    "LeastAuthorityFormula", "EndoFormula", "PromiseFormula", "ResolverFormula",
    "WebletFormula", "PeerFormula", "SturdyRefFormula", "ShareFormula",
    "InvitationFormula", "RemoteAgentFormula", "PeerInboxFormula", "RemoteResolverFormula", "FormulaModel", "WorkerLevel",
]  # fmt: skip

# 256 random bits as lower-case hex: unguessable, and one spelling per id.
FormulaId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
# The sha256 of a blob's content, lower-case hex.
ContentHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
PathPart = Annotated[str, AfterValidator(validate_name_or_special)]
PetName = Annotated[str, AfterValidator(validate_pet_name)]
# A worker's OS confinement, chosen by the power level its code was given.
WorkerLevel = Literal["NONE", "ENDO", "HOST", "CUSTOM"]


def _bytes_from_json(value: object) -> object:
    # JSON has no bytes: a stored formula carries them as base64 text.
    return base64.b64decode(value, validate=True) if isinstance(value, str) else value


StoredBytes = Annotated[
    bytes,
    BeforeValidator(_bytes_from_json),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str, when_used="json"),
]


class FormulaModel(BaseModel):
    """The base of every formula model: frozen, and no fields beyond its own."""

    # defer_build: a model's validator is built when it is first used, not
    # when this module is imported: a daemon's start-up uses a few types.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
    DEPENDS_ON: ClassVar[tuple[str, ...]] = ()  # the fields holding ids this formula dies with


# ---- the catalogue ---------------------------------------------------------------------------
class HostFormula(FormulaModel):
    type: Literal["host"] = "host"
    handle: FormulaId; petstore: FormulaId; mailbox: FormulaId; worker: FormulaId  # worker: MAIN
    endo: FormulaId; networks: FormulaId | None = None
    DEPENDS_ON = ("handle", "petstore", "mailbox", "worker", "endo", "networks")

class GuestFormula(FormulaModel):
    type: Literal["guest"] = "guest"
    handle: FormulaId; host_handle: FormulaId; petstore: FormulaId; mailbox: FormulaId; worker: FormulaId
    DEPENDS_ON = ("handle", "host_handle", "petstore", "mailbox", "worker")

class HandleFormula(FormulaModel):
    type: Literal["handle"] = "handle"
    agent: FormulaId
    DEPENDS_ON = ("agent",)

class PetStoreFormula(FormulaModel):
    type: Literal["pet-store"] = "pet-store"

class DirectoryFormula(FormulaModel):
    type: Literal["directory"] = "directory"
    petstore: FormulaId
    DEPENDS_ON = ("petstore",)

class MailboxStoreFormula(FormulaModel):
    type: Literal["mailbox-store"] = "mailbox-store"

class WorkerFormula(FormulaModel):
    type: Literal["worker"] = "worker"
    level: WorkerLevel = "HOST"  # its OS confinement

class EvalFormula(FormulaModel):
    type: Literal["eval"] = "eval"
    worker: FormulaId; source: str; names: list[str]; values: list[FormulaId]  # names[i] = values[i]
    DEPENDS_ON = ("worker", "values")

    @model_validator(mode="after")
    def _names_match_values(self) -> EvalFormula:
        if len(self.names) != len(self.values):
            raise ValueError(f"{len(self.names)} names for {len(self.values)} values")
        return self

class MakeUnconfinedFormula(FormulaModel):
    type: Literal["make-unconfined"] = "make-unconfined"
    worker: FormulaId; powers: FormulaId; specifier: str
    DEPENDS_ON = ("worker", "powers")

class MakeBundleFormula(FormulaModel):
    type: Literal["make-bundle"] = "make-bundle"
    worker: FormulaId; powers: FormulaId; bundle: FormulaId
    DEPENDS_ON = ("worker", "powers", "bundle")

class MarshalFormula(FormulaModel):
    type: Literal["marshal"] = "marshal"
    body: StoredBytes; slots: list[FormulaId]  # a captp-encoded value; the formulas it refers to
    DEPENDS_ON = ("slots",)

class ReadableBlobFormula(FormulaModel):
    type: Literal["readable-blob"] = "readable-blob"
    content: ContentHash

class TextStoreFormula(FormulaModel):
    type: Literal["text-store"] = "text-store"  # a piece of text its holders read and replace; kept in the database

class LookupFormula(FormulaModel):
    type: Literal["lookup"] = "lookup"
    hub: FormulaId; path: Annotated[list[PathPart], Field(min_length=1)]
    DEPENDS_ON = ("hub",)

class LeastAuthorityFormula(FormulaModel):
    type: Literal["least-authority"] = "least-authority"

class EndoFormula(FormulaModel):
    type: Literal["endo"] = "endo"
    host: FormulaId; least_authority: FormulaId  # host: the root host
    DEPENDS_ON = ("host", "least_authority")

class PromiseFormula(FormulaModel):
    type: Literal["promise"] = "promise"
    store: FormulaId  # a pet store that will hold the resolution
    DEPENDS_ON = ("store",)

class ResolverFormula(FormulaModel):
    type: Literal["resolver"] = "resolver"
    store: FormulaId
    DEPENDS_ON = ("store",)

class WebletFormula(FormulaModel):
    type: Literal["weblet"] = "weblet"
    guest: FormulaId; bundle: FormulaId; backend: FormulaId | None = None; manifest: dict[str, Any]
    digest: str = ""; level: WorkerLevel = "NONE"  # bundle digest; power level
    DEPENDS_ON = ("guest", "bundle", "backend")


class PeerFormula(FormulaModel):
    type: Literal["peer"] = "peer"
    locator: Annotated[str, StringConstraints(max_length=4096)]  # an OCapN peer URI: ocapn://<designator>.<netlayer>?<hints>

class SturdyRefFormula(FormulaModel):
    type: Literal["sturdyref"] = "sturdyref"  # an object at a peer: what its fetch(swiss) answers
    peer: FormulaId; swiss: Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,256}$")]
    DEPENDS_ON = ("peer",)

class ShareFormula(FormulaModel):
    type: Literal["share"] = "share"  # a value this daemon offers to peers that know the swiss number
    value: FormulaId; swiss: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{43}$")]
    host: FormulaId  # who shared it: the one host that lists and revokes it
    DEPENDS_ON = ("value", "host")

class InvitationFormula(FormulaModel):
    type: Literal["invitation"] = "invitation"  # a host's offer to an agent on another daemon; used once
    host: FormulaId; guest_name: PetName  # who invites, and the name the accepting agent's handle will get
    DEPENDS_ON = ("host",)

class RemoteAgentFormula(FormulaModel):
    type: Literal["remote-agent"] = "remote-agent"  # an agent on another daemon: mail to it goes to its peer inbox
    peer: FormulaId; swiss: Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,256}$")]
    DEPENDS_ON = ("peer",)

class PeerInboxFormula(FormulaModel):
    type: Literal["peer-inbox"] = "peer-inbox"  # where one remote agent delivers mail to ``agent``
    agent: FormulaId; sender: FormulaId  # sender: the remote-agent formula every message here is from
    DEPENDS_ON = ("agent", "sender")

class RemoteResolverFormula(FormulaModel):
    type: Literal["remote-resolver"] = "remote-resolver"  # how an agent on another daemon answers our request
    store: FormulaId; peer: FormulaId  # the request's store; the peer whose sturdyrefs it accepts as the answer
    DEPENDS_ON = ("store", "peer")


Formula = Annotated[
    HostFormula | GuestFormula | HandleFormula | PetStoreFormula | DirectoryFormula |
    MailboxStoreFormula | WorkerFormula | EvalFormula | MakeUnconfinedFormula | MakeBundleFormula |
    MarshalFormula | ReadableBlobFormula | TextStoreFormula | LookupFormula | LeastAuthorityFormula |
    EndoFormula | PromiseFormula | ResolverFormula | WebletFormula | PeerFormula | SturdyRefFormula |
    ShareFormula | InvitationFormula | RemoteAgentFormula | PeerInboxFormula | RemoteResolverFormula,
    Field(discriminator="type"),
]  # fmt: skip
# ---- end of the catalogue --------------------------------------------------------------------

FORMULA_ADAPTER: TypeAdapter[Formula] = TypeAdapter(Formula, config=ConfigDict(defer_build=True))
FORMULA_TYPES: dict[str, type[FormulaModel]] = {
    model.model_fields["type"].default: model for model in get_args(get_args(Formula)[0])
}


def new_formula_id() -> str:
    """A fresh random formula id: 256 bits as 64 lower-case hex characters."""
    return secrets.token_hex(32)


def is_formula_id(value: object) -> bool:
    """Whether ``value`` is spelled like a formula id."""
    return (
        isinstance(value, str)
        and len(value) == 64
        and all(c in "0123456789abcdef" for c in value)
    )


def parse_formula(data: Mapping[str, Any] | str | bytes) -> Formula:
    """Validate a formula from its stored dict (or JSON text); raises ``pydantic.ValidationError``."""
    if isinstance(data, (str, bytes)):
        return FORMULA_ADAPTER.validate_json(data)
    return FORMULA_ADAPTER.validate_python(data)


def formula_to_dict(formula: Formula) -> dict[str, Any]:
    """The JSON-ready dict of a formula, as stored; :func:`parse_formula` reads it back."""
    return formula.model_dump(mode="json")


def dependencies(formula: Formula) -> list[str]:
    """The ids of the formulas this one dies with, each once, in field order."""
    ids: dict[str, None] = {}
    for field in formula.DEPENDS_ON:
        value = getattr(formula, field)
        if isinstance(value, list):
            ids.update(dict.fromkeys(value))
        elif value is not None:
            ids[value] = None
    return list(ids)
