import pytest

from crossfarm.shared.events import parse_event_id


@pytest.mark.parametrize(("text", "parts"), [
    ("0-0", (0, 0)), ("1733070000000-7", (1733070000000, 7)),
    (f"{2**64 - 1}-{2**64 - 1}", (2**64 - 1, 2**64 - 1))])
def test_an_event_id_reads_as_its_milliseconds_and_sequence(text, parts):
    assert parse_event_id(text) == parts


@pytest.mark.parametrize("text", ["", "null", "7", "7-", "-7", "7-x", "+7-0", "7-0-0", " 7-0",
                                  "٣-0", f"{2**64}-0", "0-" + "9" * 30])
def test_anything_else_is_refused_naming_the_shape_of_an_id(text):
    with pytest.raises(ValueError, match="event id"):
        parse_event_id(text)
