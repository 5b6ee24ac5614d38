#!/usr/bin/env python3
"""Produce or consume with a real Kafka client, for tests.

  client.py {confluent|kafka-python|aiokafka} --bootstrap HOST:PORT --topic T --count N --produce
  client.py {confluent|kafka-python|aiokafka} --bootstrap HOST:PORT --topic T --count N --consume

--produce sends the values "0".."N-1", in order, to partition 0 with an
idempotent producer (acks=all, unbounded retries, up to 5 requests in flight
where the client allows it, small batches so that there are many Produce
requests), waits for every delivery report and prints one JSON line:

  {"client": C, "op": "produce", "count": N,
   "deliveries": [{"value": "0", "offset": 0, "error": null}, ...],
   "acked": N_ACKED, "failed": N_FAILED, "error": null}

(offset -1: delivered without a known offset, e.g. the broker answered
DUPLICATE_SEQUENCE_NUMBER; error null and offset null: no report in time).

--consume assigns partition 0 from the beginning (no consumer group), reads
until it has passed the high watermark it asked for first and has at least
N values, or nothing more comes, or --timeout, and prints:

  {"client": C, "op": "consume", "count": N, "high_watermark": H,
   "values": ["0", ...], "offsets": [0, ...], "error": null}

"error" is set (and the exit code is 1) if the client failed as a whole.
Client logs go to stderr (--debug: protocol-level logs).
"""

import argparse
import asyncio
import json
import logging
import sys
import time
import traceback

CLIENTS = ("confluent", "kafka-python", "aiokafka")


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def log(msg):
    print(f"client: {msg}", file=sys.stderr, flush=True)


def value_of(raw):
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.hex()


# ---------------------------------------------------------------- confluent


def produce_confluent(args, deliveries):
    from confluent_kafka import Producer

    conf = {
        "bootstrap.servers": args.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "retries": 2147483647,
        "max.in.flight.requests.per.connection": 5,
        "linger.ms": args.linger_ms,
        "batch.num.messages": args.batch_records,
        "message.timeout.ms": args.delivery_timeout_ms,
        "request.timeout.ms": 10000,
        "retry.backoff.ms": 100,
        "retry.backoff.max.ms": 1000,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
    }
    if args.debug:
        conf["debug"] = "eos,msg,broker,protocol"
    fatal = []

    def on_error(err):
        log(f"error callback: {err}")
        if err.fatal():
            fatal.append(str(err))

    conf["error_cb"] = on_error
    producer = Producer(conf)

    def report(i):
        def cb(err, msg):
            d = deliveries[i]
            if err is not None:
                d["error"] = str(err)
            else:
                d["offset"] = msg.offset() if msg.offset() is not None and msg.offset() >= 0 else -1

        return cb

    for i in range(args.count):
        while True:
            try:
                producer.produce(args.topic, value=str(i).encode(), partition=0, on_delivery=report(i))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(args.timeout)
    if left:
        log(f"{left} message(s) still undelivered after {args.timeout} s")
    return "; ".join(fatal) or None


def consume_confluent(args, out):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    conf = {
        "bootstrap.servers": args.bootstrap,
        # confluent-kafka insists on a group.id; with assign() and no commits
        # no group request is sent.
        "group.id": "oncelog-test-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
    }
    if args.debug:
        conf["debug"] = "consumer,fetch,broker,protocol"
    consumer = Consumer(conf)
    try:
        tp = TopicPartition(args.topic, 0)
        _low, high = consumer.get_watermark_offsets(tp, timeout=args.timeout, cached=False)
        out["high_watermark"] = high
        consumer.assign([TopicPartition(args.topic, 0, OFFSET_BEGINNING)])
        reader = Reader(args, high)
        while not reader.done():
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    reader.at_eof(msg.offset())
                    continue
                raise RuntimeError(f"consume error: {msg.error()}")
            out["values"].append(value_of(msg.value()))
            out["offsets"].append(msg.offset())
            reader.got(msg.offset())
    finally:
        consumer.close()


# ---------------------------------------------------------------- kafka-python


def produce_kafka_python(args, deliveries):
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap,
        enable_idempotence=True,
        acks="all",
        retries=2147483647,
        max_in_flight_requests_per_connection=5,
        linger_ms=args.linger_ms,
        batch_size=args.batch_bytes,
        delivery_timeout_ms=args.delivery_timeout_ms,
        request_timeout_ms=10000,
        retry_backoff_ms=100,
        reconnect_backoff_ms=100,
        reconnect_backoff_max_ms=1000,
    )
    try:
        futures = [producer.send(args.topic, value=str(i).encode(), partition=0) for i in range(args.count)]
        producer.flush(timeout=args.timeout)
        for d, f in zip(deliveries, futures):
            if f.succeeded():
                off = f.value.offset
                d["offset"] = off if off is not None and off >= 0 else -1
            elif f.failed():
                d["error"] = repr(f.exception)
    finally:
        producer.close(timeout=5)
    return None


def consume_kafka_python(args, out):
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        request_timeout_ms=10000,
    )
    try:
        tp = TopicPartition(args.topic, 0)
        consumer.assign([tp])
        high = consumer.end_offsets([tp])[tp]
        out["high_watermark"] = high
        consumer.seek_to_beginning(tp)
        reader = Reader(args, high)
        while not reader.done():
            batches = consumer.poll(timeout_ms=200)
            for rec in batches.get(tp, []):
                out["values"].append(value_of(rec.value))
                out["offsets"].append(rec.offset)
                reader.got(rec.offset)
            if not batches:
                reader.at_eof(consumer.position(tp))
    finally:
        consumer.close()


# ---------------------------------------------------------------- aiokafka


def produce_aiokafka(args, deliveries):
    from aiokafka import AIOKafkaProducer

    async def run():
        producer = AIOKafkaProducer(
            bootstrap_servers=args.bootstrap,
            enable_idempotence=True,
            acks="all",
            linger_ms=args.linger_ms,
            max_batch_size=args.batch_bytes,
            request_timeout_ms=args.delivery_timeout_ms,
            retry_backoff_ms=100,
        )
        await producer.start()
        try:
            futures = []
            for i in range(args.count):
                futures.append(await producer.send(args.topic, value=str(i).encode(), partition=0))
            try:
                await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), args.timeout)
            except asyncio.TimeoutError:
                log(f"deliveries still pending after {args.timeout} s")
            for d, f in zip(deliveries, futures):
                if not f.done():
                    continue
                if f.cancelled():
                    d["error"] = "cancelled"
                elif f.exception() is not None:
                    d["error"] = repr(f.exception())
                else:
                    off = f.result().offset
                    d["offset"] = off if off is not None and off >= 0 else -1
        finally:
            await producer.stop()

    asyncio.run(run())
    return None


def consume_aiokafka(args, out):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run():
        consumer = AIOKafkaConsumer(
            bootstrap_servers=args.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            request_timeout_ms=10000,
        )
        await consumer.start()
        try:
            tp = TopicPartition(args.topic, 0)
            consumer.assign([tp])
            high = (await consumer.end_offsets([tp]))[tp]
            out["high_watermark"] = high
            await consumer.seek_to_beginning(tp)
            reader = Reader(args, high)
            while not reader.done():
                batches = await consumer.getmany(tp, timeout_ms=200)
                for rec in batches.get(tp, []):
                    out["values"].append(value_of(rec.value))
                    out["offsets"].append(rec.offset)
                    reader.got(rec.offset)
                if not batches:
                    reader.at_eof(await consumer.position(tp))
        finally:
            await consumer.stop()

    asyncio.run(run())


# ---------------------------------------------------------------- common


class Reader:
    """When to stop consuming: past the high watermark with at least N
    values, or past it and idle for a while, or at the deadline."""

    IDLE_S = 1.5

    def __init__(self, args, high):
        self.count = args.count
        self.high = high if high is not None else 0
        self.deadline = time.monotonic() + args.timeout
        self.next = 0
        self.n = 0
        self.last_progress = time.monotonic()

    def got(self, offset):
        self.n += 1
        self.next = max(self.next, offset + 1)
        self.last_progress = time.monotonic()

    def at_eof(self, position):
        if position is not None and position >= 0:
            self.next = max(self.next, position)

    def done(self):
        now = time.monotonic()
        if now >= self.deadline:
            log(f"consume timed out: {self.n} values, next offset {self.next}, high watermark {self.high}")
            return True
        if self.next >= self.high:
            if self.n >= self.count:
                return True
            if now - self.last_progress >= self.IDLE_S:
                log(f"nothing more after offset {self.next}: {self.n} of {self.count} values")
                return True
        return False


PRODUCERS = {"confluent": produce_confluent, "kafka-python": produce_kafka_python, "aiokafka": produce_aiokafka}
CONSUMERS = {"confluent": consume_confluent, "kafka-python": consume_kafka_python, "aiokafka": consume_aiokafka}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("client", choices=CLIENTS)
    p.add_argument("--bootstrap", required=True, help="HOST:PORT")
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True, help="number of values, N")
    op = p.add_mutually_exclusive_group(required=True)
    op.add_argument("--produce", action="store_true")
    op.add_argument("--consume", action="store_true")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for all deliveries, or to read (default 60)")
    p.add_argument("--delivery-timeout-ms", type=int, default=45000,
                   help="the producer's own delivery timeout (default 45000)")
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument("--batch-records", type=int, default=10, help="confluent: batch.num.messages (default 10)")
    p.add_argument("--batch-bytes", type=int, default=160,
                   help="kafka-python batch_size / aiokafka max_batch_size (default 160: ~10 small values)")
    p.add_argument("--debug", action="store_true", help="client protocol logs on stderr")
    args = p.parse_args(argv)
    if args.count < 0:
        p.error("--count must be >= 0")
    return args


def main():
    args = parse_args()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    base = {"client": args.client, "op": "produce" if args.produce else "consume", "count": args.count}
    if args.produce:
        deliveries = [{"value": str(i), "offset": None, "error": None} for i in range(args.count)]
        try:
            error = PRODUCERS[args.client](args, deliveries)
        except Exception as e:
            traceback.print_exc()
            error = repr(e)
        acked = sum(1 for d in deliveries if d["offset"] is not None)
        failed = sum(1 for d in deliveries if d["error"] is not None)
        emit(dict(base, deliveries=deliveries, acked=acked, failed=failed, error=error))
    else:
        out = {"high_watermark": None, "values": [], "offsets": []}
        try:
            CONSUMERS[args.client](args, out)
            error = None
        except Exception as e:
            traceback.print_exc()
            error = repr(e)
        emit(dict(base, **out, error=error))
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
