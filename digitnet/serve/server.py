"""The drawing page's web server: the standard library's ``ThreadingHTTPServer``, one
thread per connection, serving the page's three files from the package and the JSON API.

Why the standard library: the page talks to one local user, a few requests in flight at a
time, each a millisecond of NumPy; ``http.server`` does that with no new dependency, imports
in milliseconds (the page must be up in under a second) and keeps the whole request path —
limits included — in this one file. Its weaknesses (no TLS, no HTTP/2, a thread per
connection) do not matter on 127.0.0.1 and are bounded here (MAX_CONNECTIONS, timeouts).

Limits, enforced before the API sees a request: bodies above MAX_BODY are refused from their
Content-Length without being read; a body must come with a Content-Length (no chunked
uploads); on a loopback address the Host header must name this server (so a web page
elsewhere cannot reach the API by DNS rebinding); every error is JSON with a 4xx status, and
an unexpected one is a 500 that leaves the server running.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
import sys
import threading
import time
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from digitnet.errors import DigitnetError, UsageError
from digitnet.serve.api import ApiError, handle
from digitnet.serve.catalog import Catalog

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8784                 # 784: the inputs of the video's network
MAX_BODY = 2 * 1024 * 1024          # bytes in one request body
MAX_CONNECTIONS = 64                # open at once; more are refused with a 503
IDLE_TIMEOUT = 20                   # seconds a connection may wait between requests

# The page: each file served at one fixed address, read from the package once at start-up.
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/static/draw.css": ("draw.css", "text/css; charset=utf-8"),
          "/static/draw.js": ("draw.js", "text/javascript; charset=utf-8")}

# The page loads nothing from elsewhere, runs no inline script, and cannot be framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; "
                               "style-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def static_files() -> dict[str, bytes]:
    """The page's files by name, from the installed package (a wheel carries them)."""
    from importlib.resources import files

    folder = files("digitnet.serve") / "static"
    return {name: (folder / name).read_bytes() for name, _ in set(STATIC.values())}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: addresses only this machine can reach."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str) -> str | None:
    """The warning ``--host`` earns when it makes the page reachable from other machines."""
    if is_loopback(host):
        return None
    return (f"listening on {host}: anyone who can reach this machine on the network can use the page "
            "and its API (there is no password); use --host 127.0.0.1 to keep it local")


class Handler(BaseHTTPRequestHandler):
    """One connection: HTTP/1.1 keep-alive, JSON errors, quiet logs."""

    protocol_version = "HTTP/1.1"
    server_version = "digitnet-draw"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    disable_nagle_algorithm = True      # headers and body leave at once, not 40 ms apart (Nagle × delayed ACK)
    server: DrawServer

    def version_string(self):
        return self.server_version

    # -- responses ------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in SECURITY_HEADERS.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: dict) -> None:
        try:
            data = json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()
        except ValueError:          # a NaN in an answer is a bug: say so rather than send invalid JSON
            status, data = 500, b'{"error":"internal error (a value that is not a number)","status":500}'
        self._send(status, data, "application/json; charset=utf-8")

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (a malformed request line, headers too long, an unknown
        method) as JSON like every other error; the connection is closed after them."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":      # an unparseable request line: still answer with a status line
            self.request_version = "HTTP/1.0"
        try:
            self._json(code, {"error": message or HTTPStatus(code).phrase, "status": code})
        except OSError:
            return
        self._linger()

    def log_message(self, format, *args):      # noqa: A002 (the base class's name)
        pass                                   # one user, one page: no access log

    # -- requests -------------------------------------------------------------------------

    def _host_ok(self) -> bool:
        host = self.headers.get("Host")
        return host is None or self.server.allowed_hosts is None or host.lower() in self.server.allowed_hosts

    def _body(self) -> bytes | None:
        """The request body, or None after answering with an error (the connection then closes)."""
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            self._json(411, {"error": "send the body with a Content-Length (chunked uploads are not accepted)"})
            self._linger()
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        if not raw.strip().isdigit():
            self.close_connection = True
            self._json(400, {"error": f"bad Content-Length {raw[:20]!r}"})
            self._linger()
            return None
        n = int(raw)
        if n > MAX_BODY:
            self.close_connection = True        # the body is not kept: the connection closes after answering
            self._json(413, {"error": f"the body is {n:,} bytes; at most {MAX_BODY:,} are accepted "
                                      "(scale the image down first)"})
            self._linger()
            return None
        data = self.rfile.read(n) if n else b""
        if len(data) != n:
            self.close_connection = True
            self._json(400, {"error": f"the body ended after {len(data):,} of {n:,} bytes"})
            return None
        return data

    def _linger(self, limit: int = 8 * MAX_BODY, seconds: float = 1.0) -> None:
        """After refusing a body unread: read and drop what the client is still sending (a
        bounded amount, briefly), so that it reads the answer instead of a connection reset."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.2)
            deadline, n = time.monotonic() + seconds, 0
            while n < limit and time.monotonic() < deadline:
                chunk = self.connection.recv(65536)
                if not chunk:
                    break
                n += len(chunk)
        except OSError:
            pass

    def _dispatch(self, method: str) -> None:
        body = self._body()                 # read first, whatever the path, so keep-alive stays in step
        if body is None:
            return
        if not self._host_ok():
            self.close_connection = True
            self._json(403, {"error": "this server only answers requests addressed to it by its own name "
                                      f"(Host {self.headers.get('Host', '')[:60]!r} is not one)"})
            return
        url = urlsplit(self.path)
        path = url.path
        if path in STATIC:
            if method not in ("GET", "HEAD"):
                self._json(405, {"error": f"{path} answers GET only"})
                return
            name, ctype = STATIC[path]
            self._send(200, self.server.static[name], ctype)
            return
        if not path.startswith("/api/"):
            self._json(404, {"error": f"no such page: {path[:80]} (the page is at /)"})
            return
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            status, obj = handle(self.server.catalog, method, path, query, ctype, body)
        except ApiError as e:
            status, obj = e.status, {"error": e.message}
        except Exception as e:      # a bug: a 500 for this request, the server goes on
            self.server.log(f"internal error on {method} {path}: {type(e).__name__}: {e}")
            status, obj = 500, {"error": f"internal error ({type(e).__name__}); the server is still running"}
        if status >= 400:
            obj.setdefault("status", status)
        self._json(status, obj)

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_OPTIONS(self):
        self._dispatch("OPTIONS")


class DrawServer(ThreadingHTTPServer):
    """The server: the catalog, the page's files, and which Host headers it answers."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, address, catalog: Catalog, static: dict[str, bytes], family=socket.AF_INET):
        self.address_family = family
        self.catalog = catalog
        self.static = static
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, Handler)
        host, port = self.server_address[:2]
        self.port = port
        self.host = host
        if is_loopback(address[0]):
            names = {address[0].lower(), "localhost", "127.0.0.1", "[::1]", f"[{host}]" if ":" in host else host}
            self.allowed_hosts = names | {f"{n}:{port}" for n in names}
        else:
            self.allowed_hosts = None

    @property
    def url(self) -> str:
        """The address to open: the loopback name when listening on every interface."""
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        return f"http://[{host}]:{self.port}/" if ":" in host else f"http://{host}:{self.port}/"

    def log(self, line: str) -> None:
        print(f"digitnet: draw: {line}", file=sys.stderr, flush=True)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            try:
                body = b'{"error":"too many connections; try again","status":503}'
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        pass            # a connection reset mid-request: nothing to report to anyone


def make_server(catalog: Catalog, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> DrawServer:
    """Bind the server (not yet serving). Port 0 picks a free port. A port in use, a host
    that is not this machine's, or a privileged port raise DigitnetError with what to do."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be from 0 to 65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return DrawServer((host.strip("[]"), port), catalog, static_files(), family)
    except socket.gaierror:
        raise UsageError(f"--host {host}: not an address or a name this machine can resolve") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise DigitnetError(f"port {port} on {host} is already in use (another digitnet draw?); choose another "
                                "with --port N, or --port 0 for any free port") from None
        if e.errno == errno.EACCES:
            raise DigitnetError(f"port {port} needs administrator rights; choose one above 1023 with --port") from None
        if e.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
            raise UsageError(f"--host {host}: not an address of this machine") from None
        raise DigitnetError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def one_blas_thread() -> None:
    """Limit BLAS to one thread for the rest of the process. One image's products are small:
    a second BLAS thread saves nothing, and on a busy machine each product waits for it to get
    a core (the default CNN's second conv took 40 ms instead of 0.4 ms beside a training)."""
    from digitnet.threads import pin_inference

    pin_inference(1)            # also for the batched passes (noise): the governor must not raise it


def serve(models=(), host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, on_ready=None, cwd: Path | None = None,
          default: Path | None = None) -> None:
    """Find the models (``Catalog.discover``), bind, call ``on_ready(server)`` and serve until
    interrupted (KeyboardInterrupt propagates to the caller, after the socket is closed).
    BLAS runs on one thread in this process: see ``one_blas_thread``."""
    one_blas_thread()
    catalog = Catalog.discover(models, cwd, default)
    server = make_server(catalog, host, port)
    try:
        threading.Thread(target=catalog.warm, name="warm-models", daemon=True).start()
        if on_ready is not None:
            on_ready(server)
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()


@contextmanager
def running(models=(), host: str = DEFAULT_HOST, port: int = 0, cwd: Path | None = None):
    """A server in a background thread for the duration of a ``with`` block (tests, scripts):
    yields the DrawServer (``.url``); stops it on leaving the block."""
    catalog = Catalog.discover(models, cwd)
    server = make_server(catalog, host, port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

