"""The console's HTTP server: a fixed set of read-only routes over :class:`~fedacq.console.data.NodeState`.

Routes (GET only, plus the token form's POST ``/login``)::

    /                     overview            /models          model versions and their quality
    /jobs                 jobs, live progress /drift?a=&b=     score drift between two score sets (PSI)
    /jobs/<id>            a job: curves, quality  /boosts      boost table versions, which is live
    /campaigns            campaigns           /lift            lift over time with intervals
    /campaigns/<name>     a campaign's cycles /egress          the egress (and ingress) ledger's summary
    /api/jobs             the jobs as JSON (what the jobs pages poll)

Nothing is served from a path taken from the request: a route maps to a view, and an id in a
URL (job, campaign, score set) is looked up among those the view lists, else 404. There are
no static files and so no directory listing. Responses carry a Content-Security-Policy that
allows only the page's own style sheet and script (by hash) and requests to this origin,
``no-store`` caching, no referrer, no framing.

Access (:mod:`fedacq.console.settings`): on loopback, requests whose ``Host`` is not a
loopback name are refused (DNS rebinding); with a token, every route but ``/login`` needs it,
as ``Authorization: Bearer <token>`` or the ``HttpOnly``, ``SameSite=Strict`` cookie the
login form sets, compared in constant time (:func:`hmac.compare_digest`). With TLS the
handshake runs in the request's own thread (TLS 1.2 or later), so a slow client holds up
no one else.
"""

from __future__ import annotations

import hmac
import http.server
import json
import logging
import socket
import ssl
import threading
from http.cookies import CookieError, SimpleCookie
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from fedacq.console import pages
from fedacq.console.data import NodeState
from fedacq.console.settings import ConsoleSettings, is_loopback, read_token

COOKIE = "fedacq_console"
#: the largest body accepted (the login form).
MAX_BODY = 4096
CSP = ("default-src 'none'; style-src '{style}'; script-src '{script}'; connect-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'").format(style=pages.STYLE_HASH,
                                                                            script=pages.SCRIPT_HASH)


class ConsoleServer:
    """The console of one node: start() binds and serves in a thread, stop() closes it."""

    def __init__(self, state: NodeState, settings: ConsoleSettings, logger: logging.Logger | None = None) -> None:
        self.state = state
        self.settings = settings
        self.log = logger or logging.getLogger("fedacq.console")
        self.token = read_token(settings.token_file) if settings.token_file is not None else None
        self.tls_context: ssl.SSLContext | None = None
        if settings.tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                ctx.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"console TLS: cannot load {settings.tls_cert} / {settings.tls_key}: {exc}") from None
            self.tls_context = ctx
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the console is not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls_context else 'http'}://{host}:{self.port}/"

    def start(self) -> "ConsoleServer":
        httpd = _Server((self.settings.host, self.settings.port), _Handler, console=self)
        if self.tls_context is not None:
            httpd.socket = self.tls_context.wrap_socket(httpd.socket, server_side=True,
                                                        do_handshake_on_connect=False)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fedacq-console", daemon=True)
        self._thread.start()
        self.log.info("console on %s (%s)", self.url, "token required" if self.token else "no token")
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    # -- routing (the handler calls these) ----------------------------------------------------
    def allowed_host(self, host: str | None) -> bool:
        """On a loopback bind, only a loopback Host (DNS rebinding); elsewhere any (the token guards)."""
        if not is_loopback(self.settings.host):
            return True
        if not host:
            return False
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return is_loopback(name.strip("[]"))

    def authorised(self, headers: Any) -> bool:
        if self.token is None:
            return True
        expected = self.token.encode()
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip().encode(), expected):
            return True
        try:
            cookie = SimpleCookie(headers.get("Cookie", ""))
        except CookieError:
            return False
        morsel = cookie.get(COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value.encode(), expected)

    def check_token(self, candidate: str) -> bool:
        return self.token is not None and hmac.compare_digest(candidate.encode(), self.token.encode())

    def render(self, path: str, query: dict[str, list[str]]) -> tuple[int, str, str]:
        """(status, content type, body) of a GET route."""
        st = self.state
        party, peer = st.src.party, st.src.peer

        def html(title: str, active: str, body: list[str], status: int = 200) -> tuple[int, str, str]:
            return status, "text/html; charset=utf-8", pages.page(title, active, party, peer, body)

        def missing(what: str) -> tuple[int, str, str]:
            return html("Not found", "", pages.message(f"No {what} at this node."), 404)
        if path == "/api/jobs":
            jobs = [{"id": j["id"], "status": j["status"], "progress": j["progress"]} for j in st.jobs()]
            return 200, "application/json", json.dumps({"jobs": jobs})
        simple: dict[str, Callable[[], tuple[int, str, str]]] = {
            "/": lambda: html("Overview", "/", pages.overview(st.overview())),
            "/jobs": lambda: html("Jobs", "/jobs", pages.jobs(st.jobs())),
            "/models": lambda: html("Model versions", "/models", pages.models(st.model_versions())),
            "/boosts": lambda: html("Boost tables", "/boosts", pages.boosts(st.boost_tables())),
            "/lift": lambda: html("Lift over time", "/lift", pages.lift(st.lift())),
            "/egress": lambda: html("Egress ledger", "/egress", pages.egress(st.ledger("egress"),
                                                                              st.ledger("ingress"))),
            "/campaigns": lambda: html("Campaigns", "/campaigns", pages.campaigns(st.campaigns())),
        }
        if path in simple:
            return simple[path]()
        if path == "/drift":
            a, b = query.get("a", [None])[0], query.get("b", [None])[0]
            if (a is None) != (b is None):
                return missing("pair of score sets (give both a and b)")
            try:
                return html("Score drift", "/drift", pages.drift(st.drift(a, b)))
            except KeyError:
                return missing("such score set")
        if path.startswith("/jobs/"):
            job_id = unquote(path[len("/jobs/"):])
            summary = next((j for j in st.jobs() if j["id"] == job_id), None)
            record = st.job(job_id) if summary is not None else None
            if record is None:
                return missing("such job")
            return html(f"Job {job_id}", "/jobs", pages.job(record, summary, st.training(job_id), st.quality(job_id)))
        if path.startswith("/campaigns/"):
            name = unquote(path[len("/campaigns/"):])
            try:
                campaign = st.campaign(name)
            except KeyError:
                return missing("such campaign")
            return html(f"Campaign {name}", "/campaigns", pages.campaign(campaign, st.lift()["series"]))
        if path == "/login":
            return html("Console token", "", pages.login(False))
        return missing("such page")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, console: ConsoleServer) -> None:
        self.console = console
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that drops the connection or fails the TLS handshake is not the server's fault
        self.console.log.debug("console: request from %s failed", client_address, exc_info=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    server_version = "fedacq-console"
    sys_version = ""
    timeout = 30
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        self.server.console.log.debug("console %s: " + format, self.client_address[0], *args)

    def _send(self, status: int, ctype: str, body: str, extra: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        headers = {"Content-Type": ctype, "Content-Length": str(len(data)), "Cache-Control": "no-store",
                   "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                   "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
                   "Cross-Origin-Resource-Policy": "same-origin", **(extra or {})}
        if self.server.console.tls_context is not None:
            headers["Strict-Transport-Security"] = "max-age=31536000"
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _gate(self) -> bool:
        """Host and token checks; False (and the refusal sent) when the request may not proceed."""
        console = self.server.console
        if not console.allowed_host(self.headers.get("Host")):
            self._send(421, "text/plain; charset=utf-8", "this console answers only to a loopback host name\n")
            return False
        path = urlsplit(self.path).path
        if path != "/login" and not console.authorised(self.headers):
            if path.startswith("/api/"):
                self._send(401, "application/json", json.dumps({"error": "token required"}),
                           {"WWW-Authenticate": "Bearer"})
            else:
                st = console.state.src
                self._send(401, "text/html; charset=utf-8",
                           pages.page("Console token", "", st.party, st.peer, pages.login(False)),
                           {"WWW-Authenticate": "Bearer"})
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if not self._gate():
            return
        parts = urlsplit(self.path)
        try:
            query = parse_qs(parts.query, max_num_fields=8)
        except ValueError:
            self._send(400, "text/plain; charset=utf-8", "too many query fields\n")
            return
        try:
            status, ctype, body = self.server.console.render(parts.path, query)
        except Exception:  # noqa: BLE001 - a view's failure is a 500 page, never a dropped connection
            self.server.console.log.exception("console: %s failed", parts.path)
            st = self.server.console.state.src
            status, ctype, body = 500, "text/html; charset=utf-8", pages.page(
                "Error", "", st.party, st.peer, pages.message("This page failed; the node's log has the reason."))
        self._send(status, ctype, body)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_POST(self) -> None:  # noqa: N802
        console = self.server.console
        if not console.allowed_host(self.headers.get("Host")):
            self._send(421, "text/plain; charset=utf-8", "this console answers only to a loopback host name\n")
            return
        if urlsplit(self.path).path != "/login" or console.token is None:
            self._send(405, "text/plain; charset=utf-8", "read-only console\n", {"Allow": "GET, HEAD"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._send(413, "text/plain; charset=utf-8", "login form too large\n")
            self.close_connection = True
            return
        form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"), max_num_fields=4)
        candidate = form.get("token", [""])[0].strip()
        st = console.state.src
        if not console.check_token(candidate):
            console.log.warning("console: a wrong token from %s", self.client_address[0])
            self._send(401, "text/html; charset=utf-8", pages.page("Console token", "", st.party, st.peer,
                                                                  pages.login(True)))
            return
        secure = "; Secure" if console.tls_context is not None else ""
        self._send(303, "text/plain; charset=utf-8", "", {
            "Location": "/", "Set-Cookie": f"{COOKIE}={console.token}; Path=/; HttpOnly; SameSite=Strict{secure}"})

    def _refuse(self) -> None:
        self._send(405, "text/plain; charset=utf-8", "read-only console\n", {"Allow": "GET, HEAD"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # noqa: N815


def console_for(cfg: Any, settings: ConsoleSettings, logger: logging.Logger | None = None) -> ConsoleServer:
    """The console of the node configured by ``cfg`` (a :class:`fedacq.node.config.NodeConfig`)."""
    from fedacq.console.data import Sources

    sources = Sources(party=cfg.party, peer=cfg.peer, state_dir=cfg.state_dir,
                      boost_tables=settings.boost_tables, campaigns=settings.campaigns)
    return ConsoleServer(NodeState(sources), settings, logger)
