"""zkleader's test bed: real ZooKeeper and etcd, injected faults and real daemons, for tests.

Like ``kazoo.testing`` and ``structlog.testing``, the pieces the tests are built on
ship as a package, so that the test suite, the benchmark (``bench/``) and the demo
(``scripts/demo.py``) import them by name instead of editing ``sys.path``:

``zkleader.testing.zkserver``    real ZooKeeper 3.8 servers from Debian's jars, on
                                 loopback: ``ZooKeeperServer`` (standalone) and
                                 ``Ensemble`` (N quorum peers), tickTime 200 ms;
                                 ``free_port``, ``four_letter``, ``wait_until``.
``zkleader.testing.faultproxy``  ``FaultProxy``, a TCP proxy between clients and
                                 servers, one port per server: silent partitions,
                                 resets, flaps, the lost reply of a chosen operation.
``zkleader.testing.daemons``     ``DaemonGroup``: real ``python -m zkleader run``
                                 daemons on one election, their JSON logs, and the
                                 records of the flock overlap detector their jobs run.
``zkleader.testing.chaos``       the fault-injection harness (``Cluster``) and the
                                 seeded chaos run; also a CLI:
                                 ``python -m zkleader.testing.chaos --seed S ...``.
``zkleader.testing.zksecure``    servers with TLS (``TlsServer``, a throw-away
                                 ``Pki``) or a digest super user.
``zkleader.testing.etcdcluster`` real etcd members from Debian's etcd-server on
                                 loopback (``EtcdCluster``), optionally with TLS
                                 and with proxies on their peer links (``isolate``).
``zkleader.testing.lostreply``   a launcher for ``zkleader run`` whose first
                                 candidacy put on etcd is applied and its reply lost
                                 (the proxy cannot pick one gRPC reply).
``zkleader.testing.notifysocket`` systemd's side of NOTIFY_SOCKET (descriptors too).
``zkleader.testing.jobs``        job scripts the daemons run as files
                                 (``jobs/detector.py``: the flock overlap detector).

Nothing here is imported by the daemon, and the submodules are not imported by this
one: ``import zkleader.testing`` starts nothing. pytest fixtures built on these live
in ``tests/conftest.py``; they are not part of this package.
"""
