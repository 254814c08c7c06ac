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


def test_an_etcd_revision_past_32_bits_is_read_whole() -> None:
    # The etcd shell names a node by its key's create revision, %010d of a 64-bit count.
    for revision in (2**31, 2**32 - 1, 2**32, 2**32 + 5, 10**10, 2**63 - 1):
        entry = candidacy.parse(name(f"{revision:010d}"))
        assert entry is not None, revision
        assert entry.sequence == revision


def test_revisions_past_32_bits_order_after_older_candidates() -> None:
    # 2**32 + 5 read modulo 2**32 would be 5 and sort first: two daemons could lead.
    children = (name("0000000007"), name("4294967295"), name(str(2**32 + 5)), name(str(10**10)), name(str(2**63 - 1)))
    queue = candidacy.Queue.from_children(tuple(reversed(children)))
    assert [e.name for e in queue.entries] == list(children)
    assert queue.predecessor(queue.entries[2]) == queue.entries[1]


def test_longer_look_alikes_are_ignored() -> None:
    # %010d pads to ten digits only, so a longer number never starts with a zero; and
    # a 64-bit revision has at most nineteen digits.
    for bad in ("01234567890", "0" * 19, "1" * 20, "-" + "1" * 11):
        assert candidacy.parse(name(bad)) is None, bad
