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

Usage: scripts/bench.py [--events N] [--parallelism P] [--runs R] [--flink DIR] [WORKLOAD ...]
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
}


class Kafka:
    """A throwaway broker for W4, started with scripts/kafka.sh."""

    def __init__(self):
        import socket
        import time

        def free_port():
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                return sock.getsockname()[1]

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


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)


def timed(cmd):
    """Runs cmd under GNU time; returns (result line fields, peak RSS in MiB)."""
    with tempfile.NamedTemporaryFile("r") as rss:
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name] + cmd, text=True, capture_output=True)
        if p.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
        peak_kib = int(rss.read().strip().splitlines()[-1])
    line = [l for l in p.stdout.splitlines() if l.startswith("workload=")][-1]
    fields = dict(kv.split("=", 1) for kv in line.split())
    return fields, peak_kib / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workloads", nargs="*", default=["w1", "w2"], choices=sorted(WORKLOADS))
    ap.add_argument("--events", type=int, default=20_000_000)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--flink", default=os.environ.get("FLINK_BASELINE_DIR", str(REPO.parent / "shared" / "bench" / "flink")))
    args = ap.parse_args()

    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "weir" / "target"))
    env = dict(os.environ, CARGO_TARGET_DIR=str(target))
    print("building weir (release)...", file=sys.stderr)
    sh(["cargo", "build", "--release", "--locked", "-p", "weir"], cwd=REPO, env=env)
    weir = str(target / "release" / "weir")
    flink = Path(args.flink)
    if not (flink / "run.sh").exists():
        sys.exit(f"Flink baseline not found at {flink} (set --flink or FLINK_BASELINE_DIR)")
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
                else:
                    cmd = [weir, "bench", ours, "--events", n, "--parallelism", p] if engine == "weir" else ["bash", str(flink / "run.sh"), theirs, n, p]
                fields, rss = timed(cmd)
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
