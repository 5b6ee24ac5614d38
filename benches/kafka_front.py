"""Produce and fetch throughput through `oncelog serve` with librdkafka
(confluent-kafka), for docs/performance.md.

    target/kafka-clients-venv/bin/python benches/kafka_front.py [--count N]

Starts `target/release/oncelog serve` on a scratch directory, produces N
values of 100 bytes to one partition with enable.idempotence=true
(acks=all: every batch durable before it is acknowledged), then consumes
them back with assign(), and prints one JSON line: records per second each
way and the average records per stored batch (from `oncelog verify`), which
`cargo run --release --example front_baseline -- RECORDS_PER_BATCH`
replays through the embedded API for the same-run comparison.
"""
import argparse, json, os, subprocess, sys, tempfile, time

from confluent_kafka import Consumer, Producer, TopicPartition

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.path.join(root, "target", "release", "oncelog")
ap = argparse.ArgumentParser()
ap.add_argument("--count", type=int, default=200_000)
args = ap.parse_args()

with tempfile.TemporaryDirectory(dir=os.environ.get("ONCELOG_BENCH_DIR", "/var/tmp")) as d:
    server = subprocess.Popen([binary, "serve", d, "--listen", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        addr = json.loads(server.stdout.readline())["listening"]
        value = os.urandom(100)
        p = Producer({"bootstrap.servers": addr, "enable.idempotence": True,
                      "linger.ms": 5, "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000})
        failed = []
        def report(err, msg):
            if err:
                failed.append(str(err))
        t = time.time()
        for i in range(args.count):
            while True:
                try:
                    p.produce("bench", value=value, partition=0, on_delivery=report)
                    break
                except BufferError:
                    p.poll(0.01)
        left = p.flush(60)
        produce_s = time.time() - t
        assert left == 0 and not failed, (left, failed[:3])
        c = Consumer({"bootstrap.servers": addr, "group.id": "bench", "enable.auto.commit": False,
                      "fetch.max.bytes": 50 << 20, "max.partition.fetch.bytes": 10 << 20})
        c.assign([TopicPartition("bench", 0, 0)])
        got, t = 0, time.time()
        while got < args.count and time.time() - t < 120:
            msgs = c.consume(10_000, 1.0)
            got += sum(1 for m in msgs if not m.error())
        fetch_s = time.time() - t
        c.close()
    finally:
        server.terminate()
        server.wait(30)
    v = json.loads(subprocess.run([binary, "verify", d], capture_output=True, text=True).stdout.splitlines()[-1])
    print(json.dumps({
        "records": args.count, "produce_records_per_s": round(args.count / produce_s),
        "fetch_records_per_s": round(got / fetch_s), "fetched": got,
        "stored_batches": v["batches"], "records_per_batch": round(args.count / max(1, v["batches"]), 1),
    }))
