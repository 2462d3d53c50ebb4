"""Load test of the demo: N concurrent requests through ``gradio_client``, latency distribution.

    python tools/demo_load.py                      # start python demo/app.py, 50 segment requests
    python tools/demo_load.py --url http://127.0.0.1:7860 -n 50 --endpoint /segment
    python tools/demo_load.py --random-weights     # tiny random-weight models (no shipped ones)

Every request is submitted at once (the server's queue holds them; its concurrency limit decides
how many run together). Prints per-request latency percentiles and throughput; exits 1 if any
request failed.
"""

import argparse
import contextlib
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "mmmask" / "data" / "examples").glob("*.png"))
HTTP_TIMEOUT_S = 300  # queued requests wait their turn; only a dead server should time out


@contextlib.contextmanager
def serve_subprocess(random_weights: bool, concurrency: int):
    """``python demo/app.py`` on a free port in a child process; yields its URL."""
    B = _browser_helper()
    port = B.free_port()
    cmd = [sys.executable, str(REPO / "demo" / "app.py"), "--port", str(port),
           "--concurrency", str(concurrency), "--device", "cpu"]
    if random_weights:
        cmd += ["--config-file", str(REPO / B.TINY_SEG[0]), "--cm3-config-file",
                str(REPO / B.TINY_CM3[0]), "--cm3-weights", "",
                "--cm3-opts", shlex.join(B.TINY_CM3[1]), *B.TINY_SEG[1]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the demo exited ({proc.returncode}): {proc.stderr.read()}")
            try:
                urllib.request.urlopen(url + "/", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the demo did not start within 300 s") from None
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _browser_helper():
    from mmmask.cli import load_demo_module

    return load_demo_module("browser.py")


def request_args(endpoint: str, i: int) -> tuple:
    """Arguments of request ``i`` to ``endpoint`` (the examples in turn)."""
    from gradio_client import handle_file

    image = handle_file(str(EXAMPLES[i % len(EXAMPLES)]))
    if endpoint == "/segment":
        tasks = ("semantic", "panoptic", "instance")
        return (image, "red star, blue circle|blue disk, pink star, sand, water, wooden floor",
                tasks[i % 3], "pmp", 0.0)
    if endpoint == "/text_to_image":
        return ("a red star on grass", i)
    if endpoint == "/caption":
        return (image, i)
    raise ValueError(f"Unknown endpoint {endpoint!r}; valid: /segment, /text_to_image, /caption")


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def run_load(url: str, n: int, endpoint: str) -> tuple[list[float], list[str], float]:
    """Submit ``n`` requests at once; returns (latencies s, errors, wall time s)."""
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False,
                    httpx_kwargs={"timeout": HTTP_TIMEOUT_S})
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def finished(start: float, job) -> None:
        try:
            job.result()
            with lock:
                latencies.append(time.perf_counter() - start)
        except Exception as e:  # noqa: BLE001 (reported below)
            with lock:
                errors.append(f"{type(e).__name__}: {e}")

    t0 = time.perf_counter()
    jobs = []
    for i in range(n):
        start = time.perf_counter()
        job = client.submit(*request_args(endpoint, i), api_name=endpoint)
        jobs.append((start, job))
    threads = [threading.Thread(target=finished, args=(s, j)) for s, j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - t0


def report(latencies: list[float], errors: list[str], wall: float, n: int) -> None:
    print(f"requests: {n}, succeeded: {len(latencies)}, failed: {len(errors)}, "
          f"wall: {wall:.2f} s, throughput: {len(latencies) / wall:.2f} req/s")
    if latencies:
        print("latency (s): " + ", ".join(
            f"{name} {v:.2f}" for name, v in [
                ("min", min(latencies)), ("p50", percentile(latencies, 50)),
                ("p90", percentile(latencies, 90)), ("p95", percentile(latencies, 95)),
                ("p99", percentile(latencies, 99)), ("max", max(latencies)),
                ("mean", statistics.fmean(latencies))]))
        edges = [percentile(latencies, q) for q in range(0, 101, 10)]
        for lo, hi in zip(edges, edges[1:]):
            count = sum(lo <= v <= hi for v in latencies)
            print(f"  {lo:7.2f} - {hi:7.2f} s  {'#' * count}")
    for e in errors[:10]:
        print("  error:", e)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=None, help="a running demo (default: serve one here)")
    p.add_argument("-n", "--requests", type=int, default=50)
    p.add_argument("--endpoint", default="/segment",
                   help="/segment, /text_to_image or /caption")
    p.add_argument("--concurrency", type=int, default=2,
                   help="the served demo's concurrency limit (without --url)")
    p.add_argument("--random-weights", action="store_true",
                   help="serve tiny random-weight models (without --url)")
    args = p.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.url:
        latencies, errors, wall = run_load(args.url, args.requests, args.endpoint)
    else:
        if not args.random_weights and not _browser_helper().shipped_segmenter():
            print("error: no shipped weights in mmmask/weights; pass --random-weights or --url",
                  file=sys.stderr)
            return 2
        with serve_subprocess(args.random_weights, args.concurrency) as url:
            print(f"serving {url} (python demo/app.py, concurrency {args.concurrency})")
            latencies, errors, wall = run_load(url, args.requests, args.endpoint)
    report(latencies, errors, wall, args.requests)
    return 1 if errors or len(latencies) != args.requests else 0


if __name__ == "__main__":
    sys.exit(main())
