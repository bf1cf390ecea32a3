"""Checkpoint durations by storage (`scripts/bench.py checkpoint-storage`).

Runs W3 with RocksDB state (`weir bench w3-rocksdb`, release build) with its
checkpoints on local disk, on an S3-compatible server on 127.0.0.1 (s3s-fs,
as the test suite installs it), and on the same server behind a proxy that
holds every request for `--delay-ms` (default 50) before passing it on, as a
remote object store's round trip would. Prints, per storage, the median over
the runs of the mean checkpoint duration, of the longest checkpoint, and of
the throughput, and the ratio of each storage's mean checkpoint duration to
local disk's. No Flink run: this compares Weir with itself.
"""

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ACCESS_KEY, SECRET_KEY = "weirbench", "weirbenchsecret"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port, what, proc):
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"{what} did not start listening on port {port}")
        time.sleep(0.05)  # polling for the port to open


class DelayProxy:
    """A TCP proxy on 127.0.0.1 that holds each request `delay_s` before
    forwarding it. A request is what a client sends on a new connection or
    after the server's last answer; answers pass at once."""

    def __init__(self, target_port, delay_s):
        self.target, self.delay = target_port, delay_s
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait()

    def _serve(self, ready):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_forever()

    async def _handle(self, client_r, client_w):
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        answered = [True]

        async def up():
            while data := await client_r.read(1 << 16):
                if answered[0]:
                    answered[0] = False
                    await asyncio.sleep(self.delay)
                server_w.write(data)
                await server_w.drain()
            server_w.close()

        async def down():
            while data := await server_r.read(1 << 16):
                answered[0] = True
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        await asyncio.gather(up(), down(), return_exceptions=True)


def s3s_fs(sh):
    """The s3s-fs binary, installed from crates.io as scripts/test.sh does when missing."""
    tools = Path.home() / ".cache" / "weir" / "tools"
    binary = Path(os.environ.get("WEIR_S3S_FS", tools / "bin" / "s3s-fs"))
    if not binary.exists():
        print("installing s3s-fs...", file=sys.stderr)
        sh(["cargo", "install", "s3s-fs@0.14.1", "--locked", "--features", "binary", "--root", str(tools),
            "--target-dir", str(Path.home() / ".cache" / "weir" / "tools-target")], stdout=sys.stderr)
        binary = tools / "bin" / "s3s-fs"
    return binary


def bench(args, weir, sh, timed):
    root = tempfile.TemporaryDirectory(prefix="weir-bench-s3")
    (Path(root.name) / "bench").mkdir()
    port = free_port()
    log = open(Path(root.name) / "s3s-fs.log", "w")
    server = subprocess.Popen([str(s3s_fs(sh)), "--host", "127.0.0.1", "--port", str(port), "--access-key", ACCESS_KEY,
                               "--secret-key", SECRET_KEY, root.name], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_listening(port, "s3s-fs", server)
        proxy = DelayProxy(port, args.delay_ms / 1000.0)
        storages = {
            "local disk": (None, None),
            "s3": (f"http://127.0.0.1:{port}", "s3://bench/direct"),
            f"s3 +{args.delay_ms} ms": (f"http://127.0.0.1:{proxy.port}", "s3://bench/delayed"),
        }
        n, p = str(args.events), str(args.parallelism)
        runs = {s: [] for s in storages}
        for r in range(args.runs):
            for name, (endpoint, uri) in storages.items():
                cmd = [weir, "bench", "w3-rocksdb", "--events", n, "--parallelism", p]
                env = None
                if uri:
                    cmd += ["--checkpoint-storage", f"{uri}-{r}"]
                    env = dict(os.environ, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=ACCESS_KEY,
                               AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION="us-east-1")
                fields, rss = timed(cmd, env=env)
                row = (float(fields["checkpoint_avg_ms"]), float(fields["checkpoint_max_ms"]),
                       float(fields["events_per_sec"]), int(fields["checkpoints"]))
                runs[name].append(row)
                print(f"  run {r + 1} {name}: {row[3]} checkpoints, avg {row[0]:.1f} ms, max {row[1]:.0f} ms, "
                      f"{row[2]:,.0f} events/s, peak {rss:,.0f} MiB", file=sys.stderr)
    finally:
        server.kill()
        server.wait()
        root.cleanup()
    med = {s: [statistics.median(r[i] for r in rows) for i in range(4)] for s, rows in runs.items()}
    local = med["local disk"][0]
    print(f"\nW3-RocksDB checkpoints by storage: events={args.events} parallelism={args.parallelism} "
          f"runs={args.runs} (medians)")
    print(f"{'storage':<16}{'checkpoints':>12}{'avg ms':>10}{'max ms':>10}{'events/s':>14}{'avg / local':>13}")
    for s, (avg, mx, rate, count) in med.items():
        ratio = avg / local if local else float("nan")
        print(f"{s:<16}{count:>12.0f}{avg:>10.1f}{mx:>10.0f}{rate:>14,.0f}{ratio:>12.2f}x")
