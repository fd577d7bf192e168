"""The dashboard, started as `./run.sh app` starts it (no address given), listens on loopback only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts a Streamlit server

ROOT = Path(__file__).resolve().parents[1]


def _listening(port: int) -> set[str]:
    """Local addresses of the LISTEN sockets on ``port`` (IPv4 and IPv6), from /proc/net/tcp*."""
    out = set()
    for name, width in (("tcp", 8), ("tcp6", 32)):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:  # 0A = LISTEN
                out.add(addr)
    return out


def test_dashboard_listens_on_loopback_by_default(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SIAMESE_WORKSPACE": str(tmp_path / "ws"), "SIAMESE_AUTO_DATASET": "0",
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 60
        while not _listening(port) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        addrs = _listening(port)
        assert addrs, "the dashboard did not start listening"
        # 0100007F = 127.0.0.1; 00000000 (or all-zero IPv6) would be every interface
        assert addrs <= {"0100007F", "00000000000000000000000001000000"}, addrs
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
