"""The seed program as the plain script a developer would write instead of using AeroGrid:
aiokafka and asyncio, JSON into a Record class, a dict grid with default rows, and each batch's
changed rows fanned out to the grid's subscribers (here one, which drains its queue).

It reads the topic from its start until it has COUNT records, then prints one JSON line:
{"records_per_second": ..., "seconds": ..., "units_sold": ..., "rows": ...}; the benchmark
checks the grid against the orders it produced.

    python seed_aiokafka.py BROKERS TOPIC COUNT [FETCH_WAIT_MS]
"""

import asyncio
import json
import sys
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition


@dataclass(slots=True)
class Order:
    product: str
    quantity: int


async def subscriber(queue: asyncio.Queue, view: dict) -> None:
    while True:
        changes = await queue.get()
        view.update(changes)


async def main(brokers: str, topic: str, count: int, fetch_wait_ms: int) -> None:
    started = time.perf_counter()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=brokers,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=fetch_wait_ms,
        max_partition_fetch_bytes=16 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    # `topics()` asks the cluster for its metadata: the topic's partitions are known after it.
    while topic not in await consumer.topics():
        await asyncio.sleep(0.01)
    partitions = sorted(consumer.partitions_for_topic(topic))
    assigned = [TopicPartition(topic, partition) for partition in partitions]
    consumer.assign(assigned)
    await consumer.seek_to_beginning(*assigned)

    product_sum: dict[str, dict] = {}
    default = lambda: {"units_sold": 0}  # noqa: E731
    queues = [asyncio.Queue()]
    views = [{}]
    tasks = [asyncio.create_task(subscriber(queue, view)) for queue, view in zip(queues, views)]

    seen = 0
    while seen < count:
        batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
        changed = {}
        for messages in batches.values():
            for message in messages:
                order = Order(**json.loads(message.value))
                row = product_sum.get(order.product) or default()
                row = {"units_sold": row["units_sold"] + order.quantity}
                product_sum[order.product] = row
                changed[order.product] = row
            seen += len(messages)
        for queue in queues:
            queue.put_nowait(changed)
    seconds = time.perf_counter() - started
    await asyncio.sleep(0)
    await consumer.stop()
    for task in tasks:
        task.cancel()
    print(
        json.dumps(
            {
                "records_per_second": seen / seconds,
                "seconds": seconds,
                "units_sold": sum(row["units_sold"] for row in product_sum.values()),
                "rows": len(product_sum),
            }
        )
    )


if __name__ == "__main__":
    brokers, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fetch_wait_ms = int(sys.argv[4]) if len(sys.argv) > 4 else 500
    asyncio.run(main(brokers, topic, count, fetch_wait_ms))
