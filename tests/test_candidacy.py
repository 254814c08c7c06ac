"""Election node names as ZooKeeper really prints them, wrap included."""

from __future__ import annotations

from zkleader.core import candidacy

ID = "ab" * 16


def name(sequence: str) -> str:
    return f"zkl-{ID}-{sequence}"


def test_every_form_of_javas_percent_010d_parses() -> None:
    # Java's String.format("%010d", n): ten digits, or a sign and nine (n > -10^9) or ten digits.
    for printed, value in (("0000000005", 5), ("2147483647", 2147483647), ("-000000005", -5),
                           ("-999999999", -999999999), ("-1000000000", -1000000000), ("-2147483648", -2147483648)):
        entry = candidacy.parse(name(printed))
        assert entry is not None, printed
        assert entry.sequence == value & 0xFFFFFFFF


def test_order_survives_the_wrap_through_short_negative_sequences() -> None:
    children = (name("2147483647"), name("-2147483648"), name("-000000005"), name("-000000001"))
    queue = candidacy.Queue.from_children(tuple(reversed(children)))
    assert [e.name for e in queue.entries] == list(children)
    assert queue.ignored == ()


def test_look_alikes_are_ignored() -> None:
    for bad in ("000000005", "00000000005", "-00000005", "--000000005", "+000000005", "-00000000005"):
        assert candidacy.parse(name(bad)) is None, bad
