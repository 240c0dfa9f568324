"""``make soak``: start ``ecrec serve`` on 127.0.0.1 with a fresh state directory and an API key,
run the load plan of ``bench/load.py`` against it (capacity, 80 % for ``--seconds``, 200 %, 50 %),
write ``docs/soak.json`` and ``docs/soak.md``, and stop the server."""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.load import soak  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the 80%% phase")
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--out", default=str(ROOT / "docs" / "soak.json"))
    ap.add_argument("--short", action="store_true")
    args = ap.parse_args()
    key = secrets.token_urlsafe(24)
    url = f"http://127.0.0.1:{args.port}"
    with tempfile.TemporaryDirectory(prefix="ecrec-soak-") as state:
        env = {**os.environ, "ECREC_API_KEYS": f'[{{"name": "soak", "key": "{key}", "rate_per_s": 100000}}]'}
        server = subprocess.Popen([sys.executable, "-m", "ecrec.cli", "serve", "--port", str(args.port),
                                   f"state_dir={state}", "namespace=ecrec-soak"], env=env, start_new_session=True)
        try:
            deadline = time.time() + 300
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.time() > deadline:
                    raise SystemExit("the server did not become ready")
                time.sleep(1)
            soak(url, args.seconds, args.out, args.short, api_key=key)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=120)


if __name__ == "__main__":
    main()
