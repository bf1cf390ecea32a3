"""Nexmark on Weir and on Flink SQL, in one run on one machine (`scripts/bench.py nexmark`).

Both engines read the same pre-loaded events from one Kafka topic in the
Nexmark project's JSON layout (bench/nexmark/ddl.sql), loaded once by Weir's
`nexmark` connector (bench/nexmark/load.sql, untimed). Each query of
bench/nexmark/ runs with the same DDL on both: Weir through `weir local`,
Flink through the Table API on a local MiniCluster (bench/flink-nexmark/).

Throughput: events in the topic / seconds, where Weir's seconds are the
whole `weir local` process and Flink's are from submitting the INSERT until
its job finished (its JVM start and catalog setup are not counted). Peak
memory is the whole process's (GNU time).

Correctness: each query runs once more on both engines over a smaller topic
with its `blackhole` sink turned into `print` (in the script both engines
get); the printed changelogs are materialized (+I/+U add a row, -U/-D take
one back) and compared row for row, numbers rounded to 3 decimals and
timestamps in one text form.
"""

import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUERIES = REPO / "bench" / "nexmark"
# Events per second of event time of the timed stream: 10 s windows then
# hold 1M events each.
RATE = 100_000
# The checked stream: one partition and one event per millisecond, so that
# rows arrive in one order and no two events tie on their timestamp. (Rows
# that sort equal — a deduplication's equal timestamps, a Top-N's equal
# prices — rank in arrival order in both engines; across partitions that
# order changes from run to run, in Flink as in Weir.)
CHECK_RATE = 1_000


def query_names(selected):
    found = sorted((p.stem for p in QUERIES.glob("q*.sql")), key=lambda q: int(q[1:]))
    if not selected:
        return found
    unknown = [q for q in selected if q not in found]
    if unknown:
        sys.exit(f"no such Nexmark query: {', '.join(unknown)}; bench/nexmark has {', '.join(found)}")
    return selected


def fill(text, **values):
    for k, v in values.items():
        text = text.replace("${" + k + "}", str(v))
    return text


_side_input = None


def side_input():
    """q13's side input: a CSV file of 10,000 rows `k,k`, written once."""
    global _side_input
    if _side_input is None:
        path = Path(tempfile.mkdtemp(prefix="weir-nexmark-side-")) / "side_input.txt"
        path.write_text("".join(f"{k},{k}\n" for k in range(10_000)))
        _side_input = path
    return _side_input


def script(query, topic, bootstrap, parallelism, print_rows=False, output=None):
    """The script an engine runs; `output` is the directory a query that
    writes files (`${OUTPUT}`, q10) writes into."""
    text = fill((QUERIES / f"{query}.sql").read_text(), SIDE_INPUT=side_input(), OUTPUT=output or "/nonexistent")
    if print_rows:
        text = text.replace("'connector' = 'blackhole'", "'connector' = 'print'")
    ddl = fill((QUERIES / "ddl.sql").read_text(), TOPIC=topic, BOOTSTRAP_SERVERS=bootstrap)
    return f"SET 'parallelism.default' = '{parallelism}';\n\n{ddl}\n{text}"


def writes_files(query):
    return "${OUTPUT}" in (QUERIES / f"{query}.sql").read_text()


def file_rows(root, columns):
    """The rows of the CSV files a query wrote under `root` (names starting
    with `.` or `_` skipped), each with the partition values of its
    directories appended; and the partitions that lack a success file."""
    import csv
    import urllib.parse
    rows = collections.Counter()
    unmarked = []
    for d, _, names in os.walk(root):
        rel = os.path.relpath(d, root)
        if any(part.startswith((".", "_")) for part in Path(rel).parts):
            continue
        values = [urllib.parse.unquote(p.split("=", 1)[1]) for p in Path(rel).parts if "=" in p]
        data = [n for n in names if not n.startswith((".", "_"))]
        if data and "_SUCCESS" not in names:
            unmarked.append(rel)
        for n in data:
            with open(os.path.join(d, n), newline="") as f:
                for record in csv.reader(f):
                    row = tuple(normal(v) for v in record + values)
                    if len(row) != len(columns):
                        raise ValueError(f"{n}: {len(row)} values, not {len(columns)}: {record}")
                    rows[row] += 1
    return rows, unmarked


def sink_columns(query):
    text = (QUERIES / f"{query}.sql").read_text()
    body = re.search(r"CREATE TABLE nexmark_q\d+ \((.*?)\n\)(?: PARTITIONED BY \([^)]*\))? WITH", text, re.S).group(1)
    return [line.strip().split()[0].strip("`") for line in body.strip().splitlines()]


def run(cmd, script_text):
    """Runs an engine on a script; returns (ok, stdout, stderr, wall seconds, peak MiB)."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as f, tempfile.NamedTemporaryFile("r") as rss:
        f.write(script_text)
        f.flush()
        t0 = time.monotonic()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name] + cmd(f.name), text=True,
                           capture_output=True)
        wall = time.monotonic() - t0
        lines = rss.read().strip().splitlines()
        peak = int(lines[-1]) / 1024.0 if lines and lines[-1].isdigit() else 0.0
    return p.returncode == 0, p.stdout, p.stderr, wall, peak


TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d)(:\d\d)?(\.\d+)?$")


def normal(v):
    """One text form for a value printed by either engine."""
    if v is None or v == "null":
        return None
    if isinstance(v, bool):
        return str(v).lower()
    s = str(v)
    m = TIMESTAMP.match(s)
    if m:
        frac = (m.group(4) or ".0")[1:4].ljust(3, "0")
        return f"{m.group(1)} {m.group(2)}{m.group(3) or ':00'}.{frac}"
    try:
        x = float(s)
    except ValueError:
        return s
    return f"{round(x, 3):.3f}".rstrip("0").rstrip(".")


PREFIX = re.compile(r"^(?:\d+> )?")
FLINK_ROW = re.compile(r"^([+-][IUD])\[(.*)\]$")


def changelog(engine, stdout, columns):
    """(op, row, follows_its_old_row) printed by an engine's print sink; the
    last is whether a +U came right after its -U from the same subtask."""
    out = []
    last = {}
    for raw in stdout.splitlines():
        raw = raw.strip()
        subtask = PREFIX.match(raw).group(0)
        line = raw[len(subtask):]
        if engine == "weir" and line.startswith("{"):
            obj = json.loads(line)
            op = obj.pop("__op", "+I")
            row = tuple(normal(obj.get(c)) for c in columns)
        elif engine == "flink" and FLINK_ROW.match(line):
            m = FLINK_ROW.match(line)
            values = m.group(2).split(", ")
            if len(values) != len(columns):
                raise ValueError(f"cannot split Flink's row into {len(columns)} values: {line}")
            op, row = m.group(1), tuple(normal(v) for v in values)
        else:
            continue
        out.append((op, row, last.get(subtask) == "-U"))
        last[subtask] = op
    return out


def materialize(changes, key):
    """The rows a changelog ends in. A +U without its -U (Flink writes some
    updating results as upserts) replaces the row of its key: the columns
    at the indexes `key`, from the query's `-- Upsert key:` comment."""
    rows = collections.Counter()
    latest = {}
    for op, row, paired in changes:
        k = tuple(row[i] for i in key) if key else None
        if op == "+U" and not paired:
            if not key:
                raise ValueError("an update without its old row, and the query names no upsert key")
            if k in latest:
                rows[latest[k]] -= 1
        if op in ("+I", "+U"):
            rows[row] += 1
            latest[k] = row
        else:
            rows[row] -= 1
            if latest.get(k) == row:
                del latest[k]
    return +rows


def upsert_key(query, columns):
    """Indexes of the columns named by the query's `-- Upsert key: a, b` comment."""
    m = re.search(r"^-- Upsert key: ([\w, ]+)", (QUERIES / f"{query}.sql").read_text(), re.M)
    return [columns.index(c.strip()) for c in m.group(1).split(",")] if m else []


def first_error(stderr):
    lines = [l for l in stderr.splitlines() if re.search(r"error|exception|not supported", l, re.I)]
    return (lines[0] if lines else stderr.strip().splitlines()[-1] if stderr.strip() else "failed")[:200]


def bench(args, weir, flink_src, Kafka, sh):
    queries = query_names(args.queries)
    p = args.parallelism
    print("setting up Flink's Nexmark runner and a Kafka broker...", file=sys.stderr)
    sh(["bash", str(REPO / "bench" / "flink-nexmark" / "setup.sh")], stdout=sys.stderr,
       env=dict(os.environ, FLINK_BASELINE_SRC=str(flink_src)))
    kafka = Kafka()
    try:
        topics = {"nexmark": (args.events, RATE, p), "nexmark-check": (args.check_events, CHECK_RATE, 1)}
        for topic, (events, rate, partitions) in topics.items():
            kafka.create_topic(topic, partitions)
            load = fill((QUERIES / "load.sql").read_text(), EVENTS=events, RATE=rate, PARALLELISM=partitions)
            ddl = fill((QUERIES / "ddl.sql").read_text(), TOPIC=topic, BOOTSTRAP_SERVERS=kafka.bootstrap)
            print(f"loading {events:,} events into {topic}...", file=sys.stderr)
            ok, _, err, wall, _ = run(lambda f: [weir, "local", f], f"{ddl}\n{load}")
            if not ok:
                sys.exit(f"loading {topic} failed:\n{err[-3000:]}")
        engines = {
            "weir": lambda f: [weir, "local", f],
            "flink": lambda f: ["bash", str(REPO / "bench" / "flink-nexmark" / "run.sh"), "nexmark", f, str(p)],
        }
        lines = []
        for q in queries:
            rates = {"weir": [], "flink": []}
            peaks = {"weir": [], "flink": []}
            failed = {}
            for r in range(args.runs):
                for engine, cmd in engines.items():
                    if engine in failed:
                        continue
                    with tempfile.TemporaryDirectory(prefix="weir-nexmark-out-") as output:
                        ok, out, err, wall, peak = run(cmd, script(q, "nexmark", kafka.bootstrap, p, output=output))
                    if not ok:
                        failed[engine] = first_error(err)
                        print(f"  {q} {engine}: unsupported ({failed[engine]})", file=sys.stderr)
                        continue
                    seconds = wall
                    if engine == "flink":
                        seconds = float(re.search(r"seconds=([\d.]+)", out).group(1))
                    rates[engine].append(args.events / seconds)
                    peaks[engine].append(peak)
                    print(f"  {q} run {r + 1} {engine}: {args.events / seconds:,.0f} events/s, peak {peak:,.0f} MiB",
                          file=sys.stderr)
            match = "n/a"
            if not failed:
                columns = sink_columns(q)
                key = upsert_key(q, columns)
                results = {}
                outputs = {}
                for engine, cmd in engines.items():
                    output = tempfile.mkdtemp(prefix=f"weir-nexmark-{q}-{engine}-")
                    text = script(q, "nexmark-check", kafka.bootstrap, p, print_rows=True, output=output)
                    ok, out, err, _, _ = run(cmd, text)
                    if not ok:
                        failed[engine] = first_error(err)
                        break
                    if writes_files(q):
                        results[engine], unmarked = file_rows(output, columns)
                        if unmarked:
                            print(f"  {q} {engine}: partitions without _SUCCESS: {', '.join(unmarked[:5])}",
                                  file=sys.stderr)
                            results[engine]["unmarked partitions"] = len(unmarked)
                        out = f"files in {output}"
                    else:
                        results[engine] = materialize(changelog(engine, out, columns), key)
                    outputs[engine] = out
                if not failed:
                    same = results["weir"] == results["flink"]
                    match = "yes" if same else "no"
                    if not same:
                        only_w = results["weir"] - results["flink"]
                        only_f = results["flink"] - results["weir"]
                        kept = Path(tempfile.mkdtemp(prefix=f"weir-nexmark-{q}-"))
                        for engine, out in outputs.items():
                            (kept / f"{engine}.txt").write_text(out)
                        print(f"  {q}: {sum(only_w.values())} rows only in Weir's result, {sum(only_f.values())} only in "
                              f"Flink's (of {sum(results['weir'].values())} and {sum(results['flink'].values())}); "
                              f"both printed changelogs are in {kept}", file=sys.stderr)
            med = {e: sorted(v)[len(v) // 2] for e, v in rates.items() if v}
            mem = {e: sorted(v)[len(v) // 2] for e, v in peaks.items() if v}
            parts = [q]
            for e in ("weir", "flink"):
                parts.append(f"{e}=unsupported" if e in failed else f"{e}_events_per_sec={med[e]:.0f}")
            if not failed:
                parts.append(f"ratio={med['weir'] / med['flink']:.2f}")
                parts.append(f"match={match}")
                parts.append(f"weir_peak_mib={mem['weir']:.0f} flink_peak_mib={mem['flink']:.0f}")
            lines.append(" ".join(parts))
            print(lines[-1], flush=True)
    finally:
        kafka.stop()
    print(f"\nnexmark events={args.events} check_events={args.check_events} parallelism={p} runs={args.runs} (medians)")
    for line in lines:
        print(line)
