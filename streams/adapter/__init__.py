"""The one adapter of private library internals: faust-streaming 0.15.3, aiokafka 0.14.0 (both
pinned exactly in pyproject.toml), Faust's RocksDB store and the stdlib's process pool.

Nothing outside this package touches a private name of those libraries
(tests/test_supply_chain.py checks it, and fails clearly when a name the adapter relies on is
gone from the pinned versions): an upgrade is a deliberate change here, with the canary run.

- :mod:`streams.adapter.bulk`: Faust's sanctioned consumer hook (``App._new_consumer``) for bulk
  delivery, the app's extensions, whole-batch produce through aiokafka.
- :mod:`streams.adapter.stores`: direct reads and batch writes of Faust's RocksDB store.
- :mod:`streams.adapter.pools`: stopping a process pool's running job.
"""
