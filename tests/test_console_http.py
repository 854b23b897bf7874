"""The console over HTTP on 127.0.0.1: every route, what it refuses, that it never writes,
TLS with a token, the ``[console]`` rules of party.toml, and a node that serves it."""

from __future__ import annotations

import http.client
import json
import os
import ssl
from pathlib import Path
from typing import Iterator

import pytest

from fedacq.console.data import NodeState, Sources
from fedacq.console.server import ConsoleServer
from fedacq.console.settings import ConsoleSettings, load_console, read_token
from test_console_data import NASTY, build_state, snapshot

PAGES = ["/", "/jobs", "/jobs/run-v1", "/jobs/run-v2", "/jobs/run-value", "/jobs/run-live", "/jobs/psi-bad",
         "/jobs/measure-0", "/models", "/drift", "/drift?a=table%3Acamp%2Fcamp-v1&b=cycle%3Aautumn%2F2", "/boosts",
         "/lift", "/egress", "/campaigns", "/campaigns/autumn"]


def get(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None,
        body: str | None = None, tls: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], str]:
    conn = (http.client.HTTPSConnection("127.0.0.1", port, context=tls, timeout=30) if tls
            else http.client.HTTPConnection("127.0.0.1", port, timeout=30))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode("utf-8")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ConsoleServer, Path]]:
    tmp_path = tmp_path_factory.mktemp("console")
    src = build_state(tmp_path)
    console = ConsoleServer(NodeState(src), ConsoleSettings(listen="127.0.0.1:0")).start()
    try:
        yield console, tmp_path
    finally:
        console.stop()


def test_every_page_renders_escaped_and_nothing_is_written(served: tuple[ConsoleServer, Path]) -> None:
    console, root = served
    before = snapshot(root)
    for path in PAGES:
        status, headers, body = get(console.port, path)
        assert status == 200, (path, body[:300])
        assert headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"
        assert "<script>alert" not in body, path  # text from disk is escaped
        assert body.count("<script>") == 1  # the console's own, nothing else
    _, _, job = get(console.port, "/jobs/psi-bad")
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quoted&quot;" in job
    _, _, camp = get(console.port, "/campaigns/autumn")
    assert "&lt;script&gt;alert" in camp and "rolled back" in camp and 'class="cycles"' in camp
    assert snapshot(root) == before


def test_pages_show_their_plots_and_tables(served: tuple[ConsoleServer, Path]) -> None:
    console, _ = served
    expect = {"/jobs/run-v2": ["logloss per round", "ROC (at decile cuts)", "KS:", "Gains"],
              "/jobs/run-value": ["Predicted vs actual", "Value by decile"],
              "/models": ["Quality per model version", 'class="models"'],
              "/drift": ["Score histogram (PSI", 'class="psi"'],
              "/boosts": ["LIVE", "camp-v2", "the campaign state names it"],
              "/lift": ["credit rate", 'class="interval"', "95%"],
              "/egress": ["sb.gradients", "512,000", "Bytes sent per message type"],
              "/campaigns": ["autumn", 'class="campaigns"']}
    for path, needles in expect.items():
        _, _, body = get(console.port, path)
        for needle in needles:
            assert needle in body, (path, needle)
        if path != "/campaigns":
            assert '<svg class="plot"' in body or path == "/boosts", path


def test_api_jobs_reports_progress(served: tuple[ConsoleServer, Path]) -> None:
    console, _ = served
    status, headers, body = get(console.port, "/api/jobs")
    assert status == 200 and headers["content-type"] == "application/json"
    live = next(j for j in json.loads(body)["jobs"] if j["id"] == "run-live")
    assert live["status"] == "running" and live["progress"]["fraction"] == pytest.approx(0.3)


@pytest.mark.parametrize("path", ["/jobs/nope", "/jobs/..%2F..%2Fetc%2Fpasswd", "/jobs/../../etc/passwd",
                                  "/campaigns/..%2Fjobs", "/static/", "/state/egress.jsonl", "/jobs/run-v1/job.json",
                                  "/drift?a=table%3A..%2F..&b=cycle%3Aautumn%2F1", "/drift?a=table%3Acamp%2Fcamp-v1",
                                  "/favicon.ico", "//etc/passwd"])
def test_unknown_routes_and_ids_are_404(served: tuple[ConsoleServer, Path], path: str) -> None:
    status, _, body = get(served[0].port, path)
    assert status == 404 and "root:" not in body


def test_writes_and_foreign_hosts_are_refused(served: tuple[ConsoleServer, Path]) -> None:
    port = served[0].port
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert get(port, "/jobs", method=method, body="x")[0] == 405
    assert get(port, "/", headers={"Host": "evil.example:80"})[0] == 421  # DNS rebinding
    assert get(port, "/", headers={"Host": f"localhost:{port}"})[0] == 200
    assert get(port, "/", headers={"Host": f"[::1]:{port}"})[0] == 200
    assert get(port, "/drift?" + "&".join(f"a{i}=1" for i in range(20)))[0] == 400


def test_empty_node_pages_say_nothing_yet(tmp_path: Path) -> None:
    src = Sources(party="platform", peer="lender", state_dir=tmp_path / "state", boost_tables=tmp_path / "tables")
    console = ConsoleServer(NodeState(src), ConsoleSettings(listen="127.0.0.1:0")).start()
    try:
        for path in ["/", "/jobs", "/models", "/drift", "/boosts", "/lift", "/egress", "/campaigns"]:
            status, _, body = get(console.port, path)
            assert status == 200 and 'class="empty"' in body, path
        assert get(console.port, "/campaigns/autumn")[0] == 404
    finally:
        console.stop()
    assert not (tmp_path / "state").exists() and not (tmp_path / "tables").exists()


# -- TLS and a token ------------------------------------------------------------------------------

@pytest.fixture
def tls_console(tmp_path: Path) -> Iterator[tuple[ConsoleServer, ssl.SSLContext, str]]:
    from fedacq.crypto.tls import init_certs

    files = init_certs(["lender"], tmp_path / "certs")["lender"]
    token = "a" * 16 + os.urandom(16).hex()
    token_file = tmp_path / "console.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    src = build_state(tmp_path / "node")
    settings = ConsoleSettings(listen="127.0.0.1:0", tls_cert=files.cert, tls_key=files.key, token_file=token_file)
    console = ConsoleServer(NodeState(src), settings).start()
    ctx = ssl.create_default_context(cafile=str(files.ca))
    try:
        yield console, ctx, token
    finally:
        console.stop()


def test_tls_and_token(tls_console: tuple[ConsoleServer, ssl.SSLContext, str]) -> None:
    console, ctx, token = tls_console
    port = console.port
    assert console.url.startswith("https://127.0.0.1:")
    status, headers, body = get(port, "/jobs", tls=ctx)
    assert status == 401 and "Console token" in body and headers["www-authenticate"] == "Bearer"
    assert get(port, "/api/jobs", tls=ctx)[0] == 401
    assert get(port, "/jobs", tls=ctx, headers={"Authorization": "Bearer " + token[:-1] + "x"})[0] == 401
    status, headers, _ = get(port, "/jobs", tls=ctx, headers={"Authorization": "Bearer " + token})
    assert status == 200 and headers["strict-transport-security"].startswith("max-age")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert get(port, "/login", "POST", form, "token=wrong", tls=ctx)[0] == 401
    status, headers, _ = get(port, "/login", "POST", form, f"token={token}", tls=ctx)
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie
    assert get(port, "/egress", tls=ctx, headers={"Cookie": cookie.split(";")[0]})[0] == 200
    assert get(port, "/egress", tls=ctx, headers={"Cookie": "fedacq_console=" + "b" * 48})[0] == 401
    assert get(port, "/login", "POST", form, "token=" + "x" * 5000, tls=ctx)[0] == 413


# -- [console] in party.toml ------------------------------------------------------------------------

def test_console_settings_rules(tmp_path: Path) -> None:
    def load(table: dict) -> ConsoleSettings | None:
        return load_console(table, "party.toml", lambda v: (tmp_path / v).resolve())
    assert load({}).listen == "127.0.0.1:8700"
    assert load({"enabled": False}) is None and load_console(None, "x", Path) is None
    assert load({"listen": "[::1]:9000"}).host == "::1"
    for table, message in [({"listen": "0.0.0.0:8700"}, "not a loopback address"),
                           ({"listen": "10.0.0.5:8700", "tls_cert": "c", "tls_key": "k"}, "not a loopback address"),
                           ({"listen": "10.0.0.5:8700", "token_file": "t"}, "not a loopback address"),
                           ({"tls_cert": "c"}, "go together"), ({"listen": "8700"}, "HOST:PORT"),
                           ({"lisen": "x"}, "unknown key"), ({"enabled": "yes"}, "true or false")]:
        with pytest.raises(ValueError, match=message):
            load(table)
    ok = load({"listen": "10.0.0.5:8700", "tls_cert": "c", "tls_key": "k", "token_file": "t"})
    assert ok.tls and ok.token_file == (tmp_path / "t").resolve()
    token = tmp_path / "t"
    token.write_text("z" * 40)
    token.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        read_token(token)
    token.chmod(0o600)
    assert read_token(token) == "z" * 40
    token.write_text("short")
    with pytest.raises(ValueError, match="at least 32"):
        read_token(token)


def test_the_node_serves_its_console(tmp_path: Path) -> None:
    from fedacq.crypto.tls import init_certs
    from fedacq.node.config import load_config
    from fedacq.node.daemon import Node
    from fedacq.node.local import free_port, write_party_config

    init_certs(["lender", "platform"], tmp_path / "certs")
    path = write_party_config(tmp_path / "lender" / "party.toml", "lender", "platform", free_port(), free_port(),
                              tmp_path / "certs", ["echo"], {}, tmp_path / "mlruns",
                              control_socket=tmp_path / "ctl.sock")
    port = free_port()
    with path.open("a") as fh:
        fh.write(f'\n[console]\nlisten = "127.0.0.1:{port}"\n')
    cfg = load_config(path)
    assert cfg.console is not None and cfg.console.port == port
    umask = os.umask(0o022)
    try:
        node = Node(cfg)
        node.start()
        try:
            status, _, body = get(port, "/")
            assert status == 200 and "fedacq console: lender" in body and "Nothing yet" in body
        finally:
            node.stop()
    finally:
        os.umask(umask)
    with pytest.raises(OSError):
        get(port, "/")


def test_the_platforms_console(tmp_path: Path) -> None:
    """The platform holds no labels: its run jobs have no curves or quality, and it says so;
    its boost tables, drift between them and its ledger are all there."""
    from test_console_data import _job, _tables

    state = tmp_path / "state"
    _job(state, "run-p", "run", "succeeded", submitted=1.0, result={"party": "platform", "intersection_size": 900,
                                                                     "info": {"trees": 10}})
    _tables(tmp_path / "tables")
    src = Sources(party="platform", peer="lender", state_dir=state, boost_tables=tmp_path / "tables")
    console = ConsoleServer(NodeState(src), ConsoleSettings(listen="127.0.0.1:0")).start()
    try:
        _, _, job = get(console.port, "/jobs/run-p")
        assert "No training history at this node" in job and "No evaluation at this node" in job
        _, _, models = get(console.port, "/models")
        assert "No model versions yet" in models
        _, _, drift = get(console.port, "/drift")
        assert "Score histogram (PSI" in drift and "camp-v2" in drift
        _, _, boosts = get(console.port, "/boosts")
        assert "the newest unexpired version" in boosts
        _, _, header = get(console.port, "/")
        assert "fedacq console: platform" in header and "peer: lender" in header
    finally:
        console.stop()


def test_console_command_serves_a_stopped_nodes_state(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from fedacq.node.local import free_port, write_party_config

    build_state(tmp_path / "lender")  # the state a stopped node left in lender/state
    path = write_party_config(tmp_path / "lender" / "party.toml", "lender", "platform", free_port(), free_port(),
                              tmp_path / "certs", ["echo"], {}, tmp_path / "mlruns")
    runner = ("import argparse, sys; from fedacq.console import commands; p = argparse.ArgumentParser(); "
              "commands.add_parser(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    refused = subprocess.run([sys.executable, "-c", runner, "console", "--config", str(path),
                              "--listen", "0.0.0.0:8700"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "not loopback" in refused.stderr
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", runner, "console", "--config", str(path),
                             "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # blocks until the console is up (or the process ends)
        assert line.startswith("fedacq console of lender: http://127.0.0.1:"), line
        status, _, body = get(port, "/campaigns/autumn")
        assert status == 200 and "rolled back" in body
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
