"""Tools for lb's tests and benchmarks, not for running lb: ``lb`` itself imports nothing here.

- ``faultproxy``: a UDP proxy between the nodes that loses, duplicates, reorders, delays and
  rate-limits datagrams (``python -m loadbalancer.testing.faultproxy``);
- ``loopback``: a master and a slave on loopback, started as a user starts them, optionally
  through the fault proxy or each in a network namespace;
- ``netns``: two network namespaces joined by a veth pair at chosen MTUs (root);
- ``proxyprocess``: the fault proxy in a process of its own, as ``loopback`` runs it;
- ``rundir``: a run's files: the configs, the nodes' logs, the master's summary and trace.
"""
