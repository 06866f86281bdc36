"""The catalogue of formula types (daemon/formulas.py): shapes, storage round trips, dependencies."""

from __future__ import annotations

import json
import typing
from typing import Any

import pydantic
import pytest

from ocapd.daemon.catalogue import MAKERS
from ocapd.daemon.formulas import (
    FORMULA_TYPES,
    EvalFormula,
    FormulaId,
    HandleFormula,
    MarshalFormula,
    WorkerFormula,
    dependencies,
    formula_to_dict,
    is_formula_id,
    new_formula_id,
    parse_formula,
)

# Readable, distinct ids: "1111…", "2222…", …
A, B, C, D, E, F = (ch * 64 for ch in "abcdef")
SHA = "0" * 64

# One stored formula of every type, and what it dies with.
EXAMPLES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "host": (
        {"type": "host", "handle": A, "petstore": B, "mailbox": C, "worker": D, "endo": E, "networks": F},
        [A, B, C, D, E, F],
    ),
    "guest": (
        {"type": "guest", "handle": A, "host_handle": B, "petstore": C, "mailbox": D, "worker": E},
        [A, B, C, D, E],
    ),
    "handle": ({"type": "handle", "agent": A}, [A]),
    "pet-store": ({"type": "pet-store"}, []),
    "directory": ({"type": "directory", "petstore": A}, [A]),
    "mailbox-store": ({"type": "mailbox-store"}, []),
    "worker": ({"type": "worker", "level": "NONE"}, []),
    "eval": (
        {"type": "eval", "worker": A, "source": "x + y", "names": ["x", "y"], "values": [B, C]},
        [A, B, C],
    ),
    "make-unconfined": (
        {"type": "make-unconfined", "worker": A, "powers": B, "specifier": "pkg.module:make"},
        [A, B],
    ),
    "make-bundle": ({"type": "make-bundle", "worker": A, "powers": B, "bundle": C}, [A, B, C]),
    "marshal": ({"type": "marshal", "body": "gqFhAQ==", "slots": [A, B]}, [A, B]),
    "readable-blob": ({"type": "readable-blob", "content": SHA}, []),
    "text-store": ({"type": "text-store"}, []),
    "lookup": ({"type": "lookup", "hub": A, "path": ["SELF", "docs", "readme"]}, [A]),
    "least-authority": ({"type": "least-authority"}, []),
    "endo": ({"type": "endo", "host": A, "least_authority": B}, [A, B]),
    "promise": ({"type": "promise", "store": A}, [A]),
    "resolver": ({"type": "resolver", "store": A}, [A]),
    "weblet": (
        {"type": "weblet", "guest": A, "bundle": B, "backend": C, "manifest": {"name": "chat", "v": [1]}, "digest": "ab" * 32, "level": "ENDO"},
        [A, B, C],
    ),
    "peer": ({"type": "peer", "locator": "ocapn://" + "a" * 52 + ".tls-ed25519?host=127.0.0.1&port=9045"}, []),
    "sturdyref": ({"type": "sturdyref", "peer": A, "swiss": "k9jJ9kZ2O4FLm8NJXU4I_lAQ1vogwaNV4xsxnB4FTRE"}, [A]),
    "share": ({"type": "share", "value": A, "swiss": "k9jJ9kZ2O4FLm8NJXU4I_lAQ1vogwaNV4xsxnB4FTRE", "host": B}, [A, B]),
    "invitation": ({"type": "invitation", "host": A, "guest_name": "bob"}, [A]),
    "remote-agent": ({"type": "remote-agent", "peer": A, "swiss": "k9jJ9kZ2O4FLm8NJXU4I_lAQ1vogwaNV4xsxnB4FTRE"}, [A]),
    "peer-inbox": ({"type": "peer-inbox", "agent": A, "sender": B}, [A, B]),
    "remote-resolver": ({"type": "remote-resolver", "store": A, "peer": B}, [A, B]),
}


def test_every_formula_type_has_an_example() -> None:
    assert set(EXAMPLES) == set(FORMULA_TYPES)


def test_the_catalogue_has_one_maker_for_every_formula_type_and_nothing_else() -> None:
    assert set(MAKERS) == set(FORMULA_TYPES.values())


@pytest.mark.parametrize("kind", ["no-such-type", "Peer", ""])
def test_a_type_without_a_maker_is_not_a_formula(kind: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        parse_formula({"type": kind})


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_a_stored_formula_round_trips(kind: str) -> None:
    stored, _ = EXAMPLES[kind]
    formula = parse_formula(stored)
    assert type(formula) is FORMULA_TYPES[kind]
    assert formula_to_dict(formula) == stored
    assert parse_formula(json.dumps(stored)) == formula
    assert parse_formula(formula.model_dump()) == formula  # python mode too


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_extra_keys_are_refused(kind: str) -> None:
    stored, _ = EXAMPLES[kind]
    with pytest.raises(pydantic.ValidationError, match="extra"):
        parse_formula({**stored, "surprise": 1})


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_formulas_are_immutable(kind: str) -> None:
    formula = parse_formula(EXAMPLES[kind][0])
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        formula.type = "other"  # type: ignore[misc]


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_dependencies_per_type(kind: str) -> None:
    stored, expected = EXAMPLES[kind]
    assert dependencies(parse_formula(stored)) == expected


@pytest.mark.parametrize(
    "bad_id",
    ["A" * 64, "a" * 63, "a" * 65, "g" * 64, "a" * 63 + "\n", "a" * 64 + "\n", "", 7],
)
def test_bad_ids_are_refused(bad_id: object) -> None:
    with pytest.raises(pydantic.ValidationError):
        parse_formula({"type": "handle", "agent": bad_id})
    with pytest.raises(pydantic.ValidationError):
        parse_formula({"type": "eval", "worker": A, "source": "", "names": ["x"], "values": [bad_id]})
    assert not is_formula_id(bad_id)


@pytest.mark.parametrize("stored", [{}, {"type": "nope"}, {"agent": A}])
def test_a_missing_or_unknown_type_is_refused(stored: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        parse_formula(stored)


def test_a_missing_field_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="agent"):
        parse_formula({"type": "handle"})


def test_defaults() -> None:
    assert WorkerFormula().level == "HOST"
    assert parse_formula({"type": "host", "handle": A, "petstore": B, "mailbox": C, "worker": D, "endo": E}) == (
        parse_formula({"type": "host", "handle": A, "petstore": B, "mailbox": C, "worker": D, "endo": E, "networks": None})
    )
    with pytest.raises(pydantic.ValidationError):
        WorkerFormula(level="ROOT")  # type: ignore[arg-type]


def test_optional_dependencies_that_are_absent_are_left_out() -> None:
    weblet = parse_formula({"type": "weblet", "guest": A, "bundle": B, "manifest": {}})
    assert dependencies(weblet) == [A, B]


def test_dependencies_are_listed_once() -> None:
    formula = EvalFormula(worker=A, source="f(x, y)", names=["x", "y"], values=[B, B])
    assert dependencies(formula) == [A, B]


def test_eval_needs_one_value_per_name() -> None:
    with pytest.raises(pydantic.ValidationError, match="2 names for 1 values"):
        EvalFormula(worker=A, source="x", names=["x", "y"], values=[B])


def test_marshal_body_is_any_bytes_and_travels_through_json() -> None:
    body = bytes(range(256))
    formula = MarshalFormula(body=body, slots=[])
    stored = json.loads(json.dumps(formula_to_dict(formula)))
    assert isinstance(stored["body"], str)
    again = parse_formula(stored)
    assert isinstance(again, MarshalFormula) and again.body == body
    with pytest.raises(pydantic.ValidationError):
        parse_formula({"type": "marshal", "body": "not base64!", "slots": []})


def test_lookup_paths_are_names() -> None:
    with pytest.raises(pydantic.ValidationError, match="invalid name"):
        parse_formula({"type": "lookup", "hub": A, "path": ["Docs"]})
    with pytest.raises(pydantic.ValidationError):
        parse_formula({"type": "lookup", "hub": A, "path": []})


def test_a_readable_blob_names_a_sha256() -> None:
    with pytest.raises(pydantic.ValidationError):
        parse_formula({"type": "readable-blob", "content": "abc"})


def _holds_formula_ids(annotation: object) -> bool:
    if annotation is FormulaId:
        return True
    return any(_holds_formula_ids(arg) for arg in typing.get_args(annotation))


@pytest.mark.parametrize("kind", sorted(FORMULA_TYPES))
def test_every_field_holding_formula_ids_is_a_declared_dependency(kind: str) -> None:
    # FormulaId and ContentHash are equal types; tell them apart by name, on purpose:
    # a blob's hash is not a formula it dies with.
    model = FORMULA_TYPES[kind]
    holding = {
        name
        for name, field in model.model_fields.items()
        if _holds_formula_ids(typing.get_type_hints(model, include_extras=True)[name])
    }
    if kind == "readable-blob":
        holding.discard("content")
    assert holding == set(model.DEPENDS_ON)


def test_new_ids_are_256_random_bits_in_lower_case_hex() -> None:
    ids = {new_formula_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_formula_id(i) for i in ids)
    HandleFormula(agent=new_formula_id())
