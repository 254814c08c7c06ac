"""zkleader: run a leader-only job on exactly one host of a group, elected through ZooKeeper."""

__version__ = "0.1.0"
