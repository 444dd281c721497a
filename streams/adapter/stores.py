"""Direct access to Faust's RocksDB store (faust-streaming 0.15.3): its own put and get encode
and decode every value through Faust's codec and go one row at a time, a sixth of the worker's
CPU with that store (py-spy); these write a partition's rows in one RocksDB batch and read raw
bytes, as Faust's own recovery does."""

from __future__ import annotations

from typing import Any

from faust.stores.rocksdb import Store as RocksDBStore
from rocksdict import WriteBatch

# The key under which Faust's RocksDB store keeps a partition's persisted changelog offset: not
# a row.
OFFSET_KEY: bytes = RocksDBStore.offset_key


def is_rocksdb(store: Any) -> bool:
    return isinstance(store, RocksDBStore)


def write_batch(store: Any, partition: int, rows: list[tuple[Any, bytes | None]]) -> None:
    """The rows' encoded values (None: delete the row) in one write batch of the partition's
    database; deletions go through Faust's delete, from whichever partition holds the key."""
    batch = WriteBatch(raw_mode=True)
    index = store._key_index
    deleted = []
    for key, value in rows:
        raw_key = store._encode_key(key)
        if value is None:
            deleted.append(key)
        else:
            batch.put(raw_key, value)
            index[raw_key] = partition
    store._db_for_partition(partition).write(batch)
    for key in deleted:  # an erasure (rare)
        if key in store:
            del store[key]


def get_raw(store: Any, partition: int, key: Any) -> bytes | None:
    """The stored bytes of `key` in the partition's database (None: no row)."""
    return store._db_for_partition(partition).get(store._encode_key(key))


def partition_databases(store: Any) -> dict[int, Any]:
    """The open database of each partition this worker holds (none for the memory store)."""
    return dict(getattr(store, "_dbs", {})) if is_rocksdb(store) else {}
