"""The peer of SmartStream's users pipeline written with Quix Streams (bench/pipeline.py runs it).

    python bench/quix_job.py BOOTSTRAP TOPIC EVENTS memory|rocksdb STATE_DIR GROUP

Per-user running means overall and per page type kept in Quix's state (changelog on, its topic
changelog__GROUP...), from offset 0; prints the events/s from its first to its last processed
event as JSON.
Quix writes nothing to Redis.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from quixstreams import Application, State
from quixstreams.state.memory import MemoryStore
from quixstreams.state.rocksdb import RocksDBStore


def main() -> None:
    bootstrap, topic_name, events, store, state_dir, group = sys.argv[1:7]
    total = int(events)
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        use_changelog_topics=True,
        loglevel="WARNING",
    )
    sdf = app.dataframe(app.topic(topic_name, value_deserializer="json"))
    sdf.register_store(store_type=MemoryStore if store == "memory" else RocksDBStore)
    seen = {"n": 0, "first": 0.0, "last": 0.0}

    def update(value: dict[str, Any], state: State) -> None:
        user = state.get("user") or {"n": 0, "avg": 0.0, "pages": {}}
        seconds = float(value["seconds"])
        n = user["n"]
        user["avg"] = user["avg"] * n / (n + 1) + seconds / (n + 1)
        user["n"] = n + 1
        page = user["pages"].setdefault(value["page_type"], [0, 0.0])
        page[1] = page[1] * page[0] / (page[0] + 1) + seconds / (page[0] + 1)
        page[0] += 1
        state.set("user", user)
        seen["n"] += 1
        if seen["n"] == 1:
            seen["first"] = time.perf_counter()
        if seen["n"] >= total:
            seen["last"] = time.perf_counter()
            app.stop()

    sdf.update(update, stateful=True)
    app.run()
    rate = (total - 1) / max(seen["last"] - seen["first"], 1e-9)
    print(json.dumps({"events_per_s": rate, "processed": seen["n"]}), flush=True)


if __name__ == "__main__":
    main()
