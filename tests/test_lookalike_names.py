"""A weblet cannot pass for another by hiding characters in its title (issue 9, item 15)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ocapd.daemon.weblet.manifest import WebletManifest, check_lookalike


@pytest.mark.parametrize(
    "title",
    [
        "Counter\u200b",  # zero-width space (Cf)
        "Cou\u200dnter",  # zero-width joiner
        "Counter\u2060",  # word joiner
        "\ufeffCounter",  # byte order mark
        "Coun\u00adter",  # soft hyphen
        "Counter\U000e0041",  # tag character
        "Counter\u034f",  # combining grapheme joiner
        "Counter\u3164",  # Hangul filler
        "Counter\ufe0f",  # variation selector
        "Coun\u2028ter",  # line separator
        "Counter\ue000",  # private use
    ],
)
def test_a_title_with_invisible_characters_is_refused(title: str) -> None:
    with pytest.raises(ValidationError, match="is not allowed in a name"):
        WebletManifest.model_validate({"title": title})


def test_ordinary_titles_in_any_script_pass() -> None:
    for title in ("Counter", "Zähler", "計數器", "Счётчик", "Counter 2 ✓", "Counter 🎉"):
        assert WebletManifest.model_validate({"title": title}).title == title
    assert check_lookalike("Counter") == "Counter"
