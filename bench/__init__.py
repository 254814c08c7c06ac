"""zkleader's benchmark harness (scripts/bench). Not part of the test suite."""
