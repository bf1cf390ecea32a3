#!/usr/bin/env python3
"""Weir against the Flink baseline, in the same run, on the same machine.

Runs each workload alternately on Weir (`weir bench`, release build) and on
Apache Flink (`bench/flink/run.sh` of the shared workspace), several times
each, and prints per workload the median events/s of both engines, the
Weir/Flink ratio, and each engine's median peak resident memory (the whole
process, measured by GNU time).

W3 (checkpointed) also reports each engine's completed checkpoints and the
median of their mean checkpoint durations.

W4 (Kafka -> 10 s tumbling count -> exactly-once Kafka) starts a Kafka broker
on 127.0.0.1 (scripts/kafka.sh), loads the generator's events into a topic
once (`weir bench w4-load`, untimed), and times both engines draining it:
`weir bench w4` and the Flink job of bench/flink-kafka/ (flink-connector-kafka
from Maven Central), each writing to a fresh output topic.

W9 (W1's events indexed into OpenSearch, one document per event) starts an
OpenSearch node on 127.0.0.1 (scripts/opensearch.sh) and times both engines
indexing into a fresh index each: `weir bench w9` and the Flink job of
bench/flink-opensearch/ (flink-connector-opensearch2 from Maven Central); the
documents in the index are counted after each run.

Nexmark (`scripts/bench.py nexmark`, alone) runs the queries of bench/nexmark/
on Weir and on Flink SQL over the same events in Kafka, checks that both give
the same result, and prints one line per query (see scripts/bench_nexmark.py):
`qN weir_events_per_sec=... flink_events_per_sec=... ratio=... match=yes|no`.

Checkpoint storage (`scripts/bench.py checkpoint-storage`, alone) runs W3
with RocksDB state on Weir only, its checkpoints on local disk, on an
S3-compatible server, and on that server behind a proxy that delays each
request (--delay-ms, default 50), and prints the checkpoint durations and
their ratio to local disk's (see scripts/bench_storage.py).

Usage: scripts/bench.py [--events N] [--parallelism P] [--runs R] [--flink DIR] [--weir BIN] [WORKLOAD ...]
       scripts/bench.py nexmark [--events N] [--check-events M] [--queries q0,q1,...] [--runs R] ...
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# workload -> (weir bench name, Flink run.sh name)
WORKLOADS = {
    "w1": ("w1", "w1"),
    "w2": ("w2", "w2"),
    # W2 written against the typed Rust API (weir crate), against the same Flink job.
    "w2-typed": ("w2-typed", "w2"),
    "w3-heap": ("w3-heap", "w3-hashmap"),
    "w3-rocksdb": ("w3-rocksdb", "w3-rocksdb"),
    "w4": ("w4", "w4"),
    "w9": ("w9", "w9"),
}


class Kafka:
    """A throwaway broker for W4, started with scripts/kafka.sh."""

    def __init__(self):
        import time

        self.dir = tempfile.TemporaryDirectory(prefix="weir-bench-kafka")
        libs = sh(["bash", str(REPO / "scripts" / "kafka.sh"), "fetch"], capture_output=True).stdout.strip().splitlines()[-1]
        self.env = dict(os.environ, WEIR_KAFKA_LIBS=libs, KAFKA_HEAP="1g")
        self.libs = libs
        port, cport = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{port}"
        self.log = open(Path(self.dir.name) / "broker.log", "w+")
        self.proc = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "kafka.sh"), "start", str(Path(self.dir.name) / "data"), str(port), str(cport)],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 120
        while True:
            self.log.seek(0)
            if "Kafka Server started" in self.log.read():
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                sys.exit(f"the Kafka broker did not start:\n{self.log.read()[-3000:]}")
            time.sleep(0.2)  # polling the broker's log for readiness

    def create_topic(self, name, partitions):
        sh(["java", "-cp", f"{self.libs}/*", "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", self.bootstrap,
            "--create", "--topic", name, "--partitions", str(partitions), "--replication-factor", "1"],
           stdout=subprocess.DEVNULL)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.dir.cleanup()


def free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OpenSearch:
    """A throwaway OpenSearch node for W9, started with scripts/opensearch.sh."""

    # The same index for both engines: one shard, no replica, no refresh while loading.
    INDEX = {
        "settings": {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "-1"},
        "mappings": {"properties": {f: {"type": "long"} for f in ("auction", "bidder", "price", "event_time_ms")}
                     | {"channel": {"type": "keyword"}}},
    }

    def __init__(self):
        import time
        import urllib.request

        self.dir = tempfile.TemporaryDirectory(prefix="weir-bench-opensearch")
        home = sh(["bash", str(REPO / "scripts" / "opensearch.sh"), "fetch"], capture_output=True).stdout.strip().splitlines()[-1]
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(Path(self.dir.name) / "node.log", "w+")
        self.proc = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "opensearch.sh"), "run", home, str(port), str(free_port()),
             str(Path(self.dir.name) / "node")],
            stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ, OPENSEARCH_HEAP="1g"))
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_cluster/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                sys.exit(f"the OpenSearch node did not start:\n{self.log.read()[-3000:]}")
            time.sleep(0.2)  # polling the node until it answers

    def request(self, method, path, body=None):
        import json
        import urllib.request
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read() or b"{}")

    def fresh_index(self, name):
        self.request("PUT", name, self.INDEX)

    def count_and_drop(self, name):
        self.request("POST", f"{name}/_refresh")
        n = self.request("GET", f"{name}/_count")["count"]
        self.request("DELETE", name)
        return n

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.dir.cleanup()


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)


def timed(cmd, env=None):
    """Runs cmd under GNU time; returns (result line fields, peak RSS in MiB)."""
    with tempfile.NamedTemporaryFile("r") as rss:
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name] + cmd, text=True, capture_output=True, env=env)
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
        peak_kib = int(rss.read().strip().splitlines()[-1])
    line = [l for l in p.stdout.splitlines() if l.startswith("workload=")][-1]
    fields = dict(kv.split("=", 1) for kv in line.split())
    return fields, peak_kib / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workloads", nargs="*", default=["w1", "w2"],
                    choices=sorted(WORKLOADS) + ["nexmark", "checkpoint-storage"])
    ap.add_argument("--delay-ms", type=int, default=50,
                    help="checkpoint-storage: how long the proxy holds each request to the S3 server")
    ap.add_argument("--check-events", type=int, default=200_000,
                    help="nexmark: events of the smaller topic both engines' results are compared on")
    ap.add_argument("--queries", type=lambda s: [q for q in s.split(",") if q],
                    help="nexmark: the queries to run (default: every bench/nexmark/qN.sql)")
    ap.add_argument("--events", type=int, default=20_000_000)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--weir", help="a release build of the weir binary to use instead of building one")
    ap.add_argument("--flink", default=os.environ.get("FLINK_BASELINE_DIR", str(REPO.parent / "shared" / "bench" / "flink")))
    args = ap.parse_args()

    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "weir" / "target"))
    env = dict(os.environ, CARGO_TARGET_DIR=str(target))
    if args.weir:
        weir = args.weir
    else:
        print("building weir (release)...", file=sys.stderr)
        sh(["cargo", "build", "--release", "--locked", "-p", "weir"], cwd=REPO, env=env)
        weir = str(target / "release" / "weir")
    if "checkpoint-storage" in args.workloads:
        if args.workloads != ["checkpoint-storage"]:
            sys.exit("checkpoint-storage runs alone: scripts/bench.py checkpoint-storage [...]")
        import bench_storage
        bench_storage.bench(args, weir, sh, timed)
        return
    flink = Path(args.flink)
    if not (flink / "run.sh").exists():
        sys.exit(f"Flink baseline not found at {flink} (set --flink or FLINK_BASELINE_DIR)")
    if "nexmark" in args.workloads:
        if args.workloads != ["nexmark"]:
            sys.exit("nexmark runs alone: scripts/bench.py nexmark [...]")
        import bench_nexmark
        bench_nexmark.bench(args, weir, flink, Kafka, sh)
        return
    print("setting up the Flink baseline...", file=sys.stderr)
    sh(["bash", str(flink / "setup.sh")], stdout=sys.stderr)

    n, p = str(args.events), str(args.parallelism)
    kafka = None
    if "w4" in args.workloads:
        print("setting up the Flink Kafka job and a Kafka broker; loading W4's input...", file=sys.stderr)
        sh(["bash", str(REPO / "bench" / "flink-kafka" / "setup.sh")], stdout=sys.stderr,
           env=dict(os.environ, FLINK_BASELINE_SRC=str(flink)))
        kafka = Kafka()
        kafka.create_topic("w4-in", args.parallelism)
        sh([weir, "bench", "w4-load", "--events", n, "--parallelism", p, "--kafka", kafka.bootstrap,
            "--input-topic", "w4-in"], stdout=sys.stderr)
    search = None
    if "w9" in args.workloads:
        print("setting up the Flink OpenSearch job and an OpenSearch node...", file=sys.stderr)
        sh(["bash", str(REPO / "bench" / "flink-opensearch" / "setup.sh")], stdout=sys.stderr,
           env=dict(os.environ, FLINK_BASELINE_SRC=str(flink)))
        search = OpenSearch()
    rows = []
    for w in args.workloads:
        runs = {"weir": [], "flink": []}
        for r in range(args.runs):
            for engine in ("weir", "flink"):
                ours, theirs = WORKLOADS[w]
                if w == "w4":
                    out = f"w4-out-{engine}-{r}"
                    kafka.create_topic(out, args.parallelism)
                    cmd = ([weir, "bench", "w4", "--events", n, "--parallelism", p, "--kafka", kafka.bootstrap,
                            "--input-topic", "w4-in", "--output-topic", out] if engine == "weir" else
                           ["bash", str(REPO / "bench" / "flink-kafka" / "run.sh"), kafka.bootstrap, "w4-in", out, n, p])
                elif w == "w9":
                    index = f"w9-{engine}-{r}"
                    search.fresh_index(index)
                    cmd = ([weir, "bench", "w9", "--events", n, "--parallelism", p, "--opensearch", search.url,
                            "--index", index] if engine == "weir" else
                           ["bash", str(REPO / "bench" / "flink-opensearch" / "run.sh"), search.url, index, n, p])
                else:
                    cmd = [weir, "bench", ours, "--events", n, "--parallelism", p] if engine == "weir" else ["bash", str(flink / "run.sh"), theirs, n, p]
                fields, rss = timed(cmd)
                if w == "w9":
                    docs = search.count_and_drop(index)
                    if docs != (args.events + 1) // 2:
                        print(f"warning: {engine} left {docs} documents in the index, expected {(args.events + 1) // 2}",
                              file=sys.stderr)
                ckpt = (int(fields.get("checkpoints", 0)), float(fields.get("checkpoint_avg_ms", 0)), float(fields.get("checkpoint_max_ms", 0)))
                runs[engine].append((float(fields["events_per_sec"]), rss, fields["results"], ckpt))
                extra = f", checkpoints={ckpt[0]} avg={ckpt[1]:.1f} ms max={ckpt[2]:.0f} ms" if "checkpoints" in fields else ""
                print(f"  {w} run {r + 1} {engine}: {float(fields['events_per_sec']):,.0f} events/s, "
                      f"peak {rss:,.0f} MiB, results={fields['results']}{extra}", file=sys.stderr)
        wr = {e: statistics.median(x[0] for x in runs[e]) for e in runs}
        mem = {e: statistics.median(x[1] for x in runs[e]) for e in runs}
        results = {e: {x[2] for x in runs[e]} for e in runs}
        if results["weir"] != results["flink"]:
            print(f"warning: {w} results differ: weir={results['weir']} flink={results['flink']}", file=sys.stderr)
        ck = {e: (statistics.median(x[3][0] for x in runs[e]), statistics.median(x[3][1] for x in runs[e])) for e in runs}
        rows.append((w, wr["weir"], wr["flink"], wr["weir"] / wr["flink"], mem["weir"], mem["flink"], ck))
    if kafka:
        kafka.stop()
    if search:
        search.stop()

    print(f"\nevents={n} parallelism={p} runs={args.runs} (medians)")
    print(f"{'workload':<12}{'weir ev/s':>15}{'flink ev/s':>15}{'ratio':>9}{'weir MiB':>11}{'flink MiB':>11}{'checkpoints weir/flink (avg ms)':>36}")
    for w, a, b, ratio, ma, mb, ck in rows:
        cks = f"{ck['weir'][0]:.0f} ({ck['weir'][1]:.1f}) / {ck['flink'][0]:.0f} ({ck['flink'][1]:.1f})" if w.startswith(("w3", "w4")) else ""
        print(f"{w:<12}{a:>15,.0f}{b:>15,.0f}{ratio:>8.1f}x{ma:>11,.0f}{mb:>11,.0f}{cks:>36}")
    weir_rates = {w: a for w, a, *_ in rows}
    if "w2" in weir_rates and "w2-typed" in weir_rates:
        # The typed API's cost: the same job as closures over serde types.
        print(f"w2-typed / w2 on Weir: {weir_rates['w2-typed'] / weir_rates['w2']:.2f}")


if __name__ == "__main__":
    main()
