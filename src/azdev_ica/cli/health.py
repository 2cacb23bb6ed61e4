"""`ica health`: ask a running ICA whether it is alive (`/health`) or ready (`/ready`).

What the container image's HEALTHCHECK runs (the slim image has no curl): exit 0 when the
server answers 200, 1 otherwise. Standard library only, so it costs a probe next to nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


def register(sub: Any) -> None:
    health = sub.add_parser(
        "health",
        help="probe a running ICA: exit 0 when /health (or /ready) answers 200",
        description="GET <url>/health, or <url>/ready with --ready; exit 0 on 200, 1 on any "
        "other answer or none within --timeout. The container image's health check.",
    )
    health.add_argument("--url", default=DEFAULT_URL, help="ICA's base URL (%(default)s)")
    health.add_argument("--ready", action="store_true", help="probe /ready instead")
    health.add_argument(
        "--timeout",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="how long the one call to ICA may take (default: 3)",
    )
    health.set_defaults(func=_health)


def _health(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    path = "/ready" if args.ready else "/health"
    url = args.url.rstrip("/") + path
    if not url.startswith(("http://", "https://")):
        print(f"ica: not an http(s) URL: {args.url}", file=sys.stderr)
        return 64
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:  # noqa: S310
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
        exc.close()
    except (urllib.error.URLError, OSError) as exc:
        print(f"ica: {url}: no answer ({exc})", file=sys.stderr)
        return 1
    print(f"{url}: {status}")
    return 0 if status == 200 else 1
