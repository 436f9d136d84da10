"""The Python demo guest: ``python -m umonitor.guest.demo.demo_guest HOST:PORT NAME``.

Logs through the standard ``logging`` module with ``LogHandler``: a start-up line,
then a steady mix of every level with fields, like a small service would.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import random
import signal
import sys
import time

from umonitor.guest.client import Client
from umonitor.guest.log_handler import LogHandler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collector", help="HOST:PORT of the collector")
    parser.add_argument("name", help="instance name")
    parser.add_argument("--rate", type=float, default=4.0, help="records per second")
    parser.add_argument("--count", type=int, default=0, help="stop after N records (0: never)")
    args = parser.parse_args(argv)
    host, _, port = args.collector.rpartition(":")
    client = Client(host or "127.0.0.1", int(port), args.name)
    logger = logging.getLogger("demo")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(LogHandler(client))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    logger.info("python demo guest starting", extra={"fields": {"rate": args.rate}})
    rng = random.Random(7)
    try:
        for n in itertools.count(1):
            if args.count and n > args.count:
                break
            latency = rng.randint(1, 250)
            fields = {"request": n, "latency_ms": latency}
            if n % 17 == 0:
                logger.error("request %d failed: upstream timed out", n, extra={"fields": fields})
            elif latency > 200:
                logger.warning("request %d slow", n, extra={"fields": fields})
            elif n % 5 == 0:
                logger.debug("cache stats", extra={"fields": {"hits": n * 3, "misses": n}})
            else:
                logger.info("request %d served", n, extra={"fields": fields})
            client.poll()
            time.sleep(1.0 / args.rate)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
