"""first_line: what a one-line user error quotes of an underlying exception."""

from abcmusic.errors import first_line


def test_first_line_keeps_only_the_first_line_of_a_message():
    assert first_line(OSError("When getting information for key 'x':\nAWS Error NETWORK_CONNECTION")) == (
        "When getting information for key 'x':")
    assert first_line(ValueError("\n  leading blank lines\nmore")) == "leading blank lines"


def test_first_line_names_the_type_of_an_exception_without_a_message():
    assert first_line(RuntimeError()) == "RuntimeError"
    assert first_line(OSError("   \n")) == "OSError"
