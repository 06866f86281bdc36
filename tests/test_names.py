"""Pet names, special names and name paths (daemon/names.py)."""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ocapd.daemon.names import (
    SPECIAL_NAMES,
    InvalidName,
    is_pet_name,
    is_special_name,
    parse_path,
    validate_name_or_special,
    validate_pet_name,
)

ALLOWED = set(string.ascii_lowercase + string.digits + "-")


def reference_is_pet_name(name: str) -> bool:
    """The rule written out by hand, to check the regular expression against."""
    return 1 <= len(name) <= 128 and name[0] != "-" and all(c in ALLOWED for c in name)


@pytest.mark.parametrize("name", ["a", "0", "my-file", "a-", "x" * 128, "9lives", "a--b"])
def test_pet_names_of_lowercase_letters_digits_and_dashes_are_accepted(name: str) -> None:
    assert validate_pet_name(name) == name
    assert is_pet_name(name)


@pytest.mark.parametrize(
    "name",
    ["", "-a", "Foo", "a_b", "a.b", "a b", "é", "x" * 129, "abc\n", "\nabc", "a\x00"],
)
def test_other_pet_names_are_refused_saying_what_is_allowed(name: str) -> None:
    with pytest.raises(InvalidName) as caught:
        validate_pet_name(name)
    message = str(caught.value)
    assert "\n" not in message
    assert "use lower-case letters, digits and '-', starting with a letter or digit" in message
    assert "at most 128 characters" in message


def test_the_refusal_names_the_offending_name() -> None:
    with pytest.raises(InvalidName, match=r"^invalid pet name 'Foo': use lower-case letters"):
        validate_pet_name("Foo")


def test_a_very_long_name_is_echoed_shortened() -> None:
    with pytest.raises(InvalidName) as caught:
        validate_pet_name("X" * 10_000)
    assert len(str(caught.value)) < 250


def test_invalid_name_is_a_value_error() -> None:
    assert issubclass(InvalidName, ValueError)


def test_a_name_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidName, match="must be a string"):
        validate_pet_name(42)


@given(
    st.text(alphabet=st.sampled_from(sorted(ALLOWED) + ["A", "_", ".", " ", "\n", "é"]), max_size=140)
    | st.text(max_size=10)
)
@example("a" * 128)
@example("a" * 129)
@example("a\n")
def test_pet_name_rule_matches_the_reference(name: str) -> None:
    assert is_pet_name(name) == reference_is_pet_name(name)
    if reference_is_pet_name(name):
        assert validate_pet_name(name) == name
    else:
        with pytest.raises(InvalidName):
            validate_pet_name(name)


@given(st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,127}\Z"))
def test_every_name_the_pattern_describes_is_accepted(name: str) -> None:
    assert validate_pet_name(name) == name


def test_the_special_names() -> None:
    assert SPECIAL_NAMES == {"SELF", "AGENT", "HOST", "ENDO", "NONE", "MAIN", "INFO", "MAIL"}
    assert all(is_special_name(name) for name in SPECIAL_NAMES)
    assert not is_special_name("self")
    assert not is_special_name("OTHER")


@pytest.mark.parametrize("name", sorted(SPECIAL_NAMES))
def test_special_names_are_read_only_so_not_pet_names(name: str) -> None:
    with pytest.raises(InvalidName, match="special name and read-only"):
        validate_pet_name(name)
    assert validate_name_or_special(name) == name


def test_name_or_special_refuses_anything_else() -> None:
    assert validate_name_or_special("file") == "file"
    with pytest.raises(InvalidName, match="special names AGENT, ENDO"):
        validate_name_or_special("Self")


def test_a_path_splits_into_checked_parts() -> None:
    assert parse_path("a") == ["a"]
    assert parse_path("a.b.c") == ["a", "b", "c"]
    assert parse_path("SELF.inbox-2") == ["SELF", "inbox-2"]


@pytest.mark.parametrize("path", ["", ".", "a..b", ".a", "a."])
def test_a_path_with_an_empty_part_is_refused(path: str) -> None:
    with pytest.raises(InvalidName, match="empty part"):
        parse_path(path)


def test_a_special_name_may_only_start_a_path() -> None:
    with pytest.raises(InvalidName, match="special names may only start a path"):
        parse_path("a.SELF")


@pytest.mark.parametrize("path", ["Foo.b", "a.B", "a.b_c"])
def test_a_path_with_a_bad_part_names_it(path: str) -> None:
    with pytest.raises(InvalidName, match="invalid name path"):
        parse_path(path)
