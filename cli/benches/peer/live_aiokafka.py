"""The seed program's live path as the plain script a developer would write instead of using
AeroGrid: aiokafka and asyncio, JSON into a Record class, a dict grid with default rows, and
each batch's changed rows sent to every subscriber of a gRPC server-streaming method (grpcio).

It reads the topic from its start, so its totals are the grid's. A subscriber calls
`/peer.Grid/Subscribe` (any request bytes) and gets JSON messages: first every row, then each
batch's changed rows, as {"product": units_sold, ...}. Once it serves, it prints one JSON line
{"port": N}; it runs until its standard input closes.

    python live_aiokafka.py BROKERS TOPIC [FETCH_WAIT_MS]
"""

import asyncio
import json
import sys
from dataclasses import dataclass

import grpc
from aiokafka import AIOKafkaConsumer, TopicPartition


@dataclass(slots=True)
class Order:
    product: str
    quantity: int


async def main(brokers: str, topic: str, fetch_wait_ms: int) -> None:
    product_sum: dict[str, dict] = {}
    default = lambda: {"units_sold": 0}  # noqa: E731
    subscribers: set[asyncio.Queue] = set()

    async def subscribe(request: bytes, context):
        queue: asyncio.Queue = asyncio.Queue()
        subscribers.add(queue)
        try:
            yield json.dumps({key: row["units_sold"] for key, row in product_sum.items()}).encode()
            while True:
                yield await queue.get()
        finally:
            subscribers.discard(queue)

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "peer.Grid", {"Subscribe": grpc.unary_stream_rpc_method_handler(subscribe)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=brokers,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=fetch_wait_ms,
    )
    await consumer.start()
    while topic not in await consumer.topics():
        await asyncio.sleep(0.01)
    assigned = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(assigned)
    await consumer.seek_to_beginning(*assigned)
    print(json.dumps({"port": port}), flush=True)

    async def consume() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=1000)
            changed = {}
            for messages in batches.values():
                for message in messages:
                    order = Order(**json.loads(message.value))
                    row = product_sum.get(order.product) or default()
                    row = {"units_sold": row["units_sold"] + order.quantity}
                    product_sum[order.product] = row
                    changed[order.product] = row["units_sold"]
            if changed:
                payload = json.dumps(changed).encode()
                for queue in subscribers:
                    queue.put_nowait(payload)

    consuming = asyncio.create_task(consume())
    # Until the benchmark closes our standard input.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    consuming.cancel()
    await consumer.stop()
    await server.stop(None)


if __name__ == "__main__":
    brokers, topic = sys.argv[1], sys.argv[2]
    fetch_wait_ms = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    asyncio.run(main(brokers, topic, fetch_wait_ms))
