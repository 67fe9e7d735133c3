#!/usr/bin/python3
"""The seed's legacy AI service (section 3 of ml-ai-integration-recommendations.md): a Python gRPC
server of novacron.ai.AIService (PredictBandwidth, OptimizePlacement, DetectAnomaly), with a small
deterministic heuristic in place of the seed's models, so that tests can compute every answer
independently and catch a row that belongs to another request.

Run it with Debian's interpreter, /usr/bin/python3, which has python3-grpcio and python3-protobuf
(scripts/ensure-python-grpc.sh installs them):

    /usr/bin/python3 examples/legacy/seed_server.py --port 50051

It needs no protoc and no grpc_tools: the message classes are the committed ai_service_pb2.py and
health_pb2.py, and the service is registered with grpc.method_handlers_generic_handler.

The heuristic ("legacy-heuristic-1"):

PredictBandwidth
    historical_metrics is a window of steps x 6 values, oldest step first, in the order cpu, memory,
    disk_io, network_io, latency, error_rate (the order of the sidecar's bandwidth feature spec); its
    length must be a non-zero multiple of 6. s is the network_io column (values[3::6]), n = len(s).
      level      = exponentially weighted mean of s, alpha 0.5: level = s[0]; then for each later x,
                   level = 0.5*x + 0.5*level
      trend      = (s[n-1] - s[0]) / (n - 1), or 0 when n == 1
      prediction = max(0, level + trend*k) for minute k = 1..horizon, one per minute of horizon
      confidence = 1 / (1 + std/(|mean| + 1)), mean and std (population) of s; so in (0, 1]
    horizon_minutes 0 means 10; negative or above 1440 is INVALID_ARGUMENT.

DetectAnomaly
    Each metric's z-score against a fixed baseline (mean, std): cpu (0.5, 0.2), memory (0.6, 0.2),
    disk_io (100, 50), network_io (100, 50), latency (20, 10), error_rate (0.01, 0.01). The metric with
    the largest |z| (the first, in that order, on a tie) decides:
      score        = |z| / (|z| + 3), in [0, 1)
      is_anomaly   = |z| >= 3 (score >= 0.5)
      anomaly_type = "<metric>_high" or "<metric>_low" (sign of z) when is_anomaly, else "none"
      severity     = "none" (|z| < 2), "low" (< 3), "medium" (< 4.5), "high" (< 6), "critical"
    current_metrics is required.

OptimizePlacement
    A node fits when cpu_available and memory_available are > 0 and at least requirements["cpu"] and
    requirements["memory"] (missing keys: 0; other keys are ignored). Each fitting node scores
      score = 0.5*(1 - req_cpu/cpu_available) + 0.5*(1 - req_memory/memory_available), in [0, 1]
    Candidates are the fitting nodes, by score descending, then node_id ascending;
    overall_confidence is the first candidate's score, or 0 when no node fits. available_nodes must be
    non-empty with distinct, non-empty node_ids; requirements must be finite and >= 0.

Any non-finite input value is INVALID_ARGUMENT, naming the field.

Fault injection, for tests: --delay-ms N adds N ms before every answer (cut short when the client
cancels); --error-rate F answers a fraction F of the calls UNAVAILABLE, drawn from a PRNG seeded by
--seed (so the sequence of failures is deterministic for a given order of calls); --malformed answers
every call wrongly: one prediction too many, an anomaly score of 2, and a placement candidate
"no-such-node" that was not among available_nodes.

grpc.health.v1 Check is served (health_pb2.py: Debian's python3-grpcio ships no grpc_health module):
SERVING for "" and "novacron.ai.AIService", NOT_FOUND for any other service. --no-health leaves it
out, so that a client's fallback for servers without health checks can be tested. Watch is not
served (UNIMPLEMENTED).

HTTP/JSON routes (--http-port N; off by default, 0 picks a free port): the same service over the
seed's HTTP routes, with the standard library's http.server, so that a migration from the HTTP arm
to the gRPC arm can be compared answer by answer. The answers are the same heuristic functions' and
the faults the same flags':
    POST /api/v1/predict        a BandwidthRequest            -> a BandwidthResponse
    POST /api/v1/predict/batch  {"vms": [BandwidthRequest]}   -> {"results": [BandwidthResponse]}, in order
    POST /api/v1/anomaly        an AnomalyRequest             -> an AnomalyResponse
    POST /api/v1/placement      a PlacementRequest            -> a PlacementResponse
    GET  /healthz               200 {"status": "SERVING"} (not subject to the faults; --no-health is
                                gRPC's only)
Bodies are proto3 JSON of ai_service_pb2's messages under the proto field names
(google.protobuf.json_format, preserving_proto_field_name): zero values are left out of answers, and
unknown request fields are ignored, as gRPC ignores unknown fields (the sidecar's requests carry
"model", a field of its extended proto). A body that is not such JSON, and a request the heuristic
refuses, is 400 with FastAPI's {"detail": "..."} (in a batch, the message names the row: vms[i]);
--error-rate is 503, with one draw per VM (a batch of n fails when any of its n draws does, as n
gRPC calls would); --malformed gives the same wrong answers (in a batch, every row); --delay-ms holds
every answer, cut short when the client closes the connection. An unknown path is 404, a known path
with another method 405. --workers bounds the HTTP answers in progress too (a bound of its own).

With --port 0 the server picks a free port. Either way its first line on stdout, once it accepts
calls, is "listening on HOST:PORT"; with --http-port, the second is "http listening on HOST:PORT".
It stops on SIGTERM or SIGINT and, unless --ignore-stdin, when its stdin reaches end of file, so a
test that dies never leaves it running; the HTTP server stops with the gRPC server.
"""

import argparse
import http.server
import json
import logging
import math
import os
import random
import select
import signal
import socket
import sys
import threading
import time
from concurrent import futures
from urllib.parse import urlsplit

import grpc
from google.protobuf import json_format

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ai_service_pb2 as pb  # noqa: E402
import health_pb2  # noqa: E402

MODEL_VERSION = "legacy-heuristic-1"
FEATURES = ("cpu", "memory", "disk_io", "network_io", "latency", "error_rate")
NETWORK_IO = FEATURES.index("network_io")
ALPHA = 0.5
DEFAULT_HORIZON = 10
MAX_HORIZON = 1440
BASELINE = {
    "cpu": (0.5, 0.2),
    "memory": (0.6, 0.2),
    "disk_io": (100.0, 50.0),
    "network_io": (100.0, 50.0),
    "latency": (20.0, 10.0),
    "error_rate": (0.01, 0.01),
}
SERVICE = "novacron.ai.AIService"

log = logging.getLogger("seed_server")


class Invalid(Exception):
    """A request the heuristic cannot answer: INVALID_ARGUMENT with this message."""


def finite(field, x):
    if not math.isfinite(x):
        raise Invalid(f"{field}: {x} is not a finite number")
    return x


def forecast(values, horizon):
    """PredictBandwidth's heuristic: (predictions, confidence)."""
    if not values or len(values) % len(FEATURES):
        raise Invalid(
            f"historical_metrics: {len(values)} values, want a non-zero multiple of "
            f"{len(FEATURES)} (steps x {', '.join(FEATURES)})"
        )
    for i, x in enumerate(values):
        finite(f"historical_metrics[{i}]", x)
    if horizon < 0 or horizon > MAX_HORIZON:
        raise Invalid(f"horizon_minutes: {horizon}, want 0 (means {DEFAULT_HORIZON}) to {MAX_HORIZON}")
    h = horizon or DEFAULT_HORIZON
    s = list(values[NETWORK_IO :: len(FEATURES)])
    n = len(s)
    level = s[0]
    for x in s[1:]:
        level = ALPHA * x + (1.0 - ALPHA) * level
    trend = (s[-1] - s[0]) / (n - 1) if n > 1 else 0.0
    predictions = [max(0.0, level + trend * k) for k in range(1, h + 1)]
    mean = 0.0
    for x in s:
        mean += x
    mean /= n
    var = 0.0
    for x in s:
        var += (x - mean) * (x - mean)
    var /= n
    confidence = 1.0 / (1.0 + math.sqrt(var) / (abs(mean) + 1.0))
    return predictions, confidence


def anomaly(m):
    """DetectAnomaly's heuristic: (is_anomaly, score, anomaly_type, severity)."""
    best, best_z = None, 0.0
    for name in FEATURES:
        mu, sigma = BASELINE[name]
        z = (finite(f"current_metrics.{name}", getattr(m, name)) - mu) / sigma
        if best is None or abs(z) > abs(best_z):
            best, best_z = name, z
    z = abs(best_z)
    score = z / (z + 3.0)
    is_anomaly = z >= 3.0
    kind = f"{best}_{'high' if best_z > 0 else 'low'}" if is_anomaly else "none"
    if z < 2.0:
        severity = "none"
    elif z < 3.0:
        severity = "low"
    elif z < 4.5:
        severity = "medium"
    elif z < 6.0:
        severity = "high"
    else:
        severity = "critical"
    return is_anomaly, score, kind, severity


def placement(req):
    """OptimizePlacement's heuristic: ([(node_id, score, reasoning)], overall_confidence)."""
    if not req.available_nodes:
        raise Invalid("available_nodes: empty, want at least one node")
    for k, v in req.requirements.items():
        if not math.isfinite(v) or v < 0:
            raise Invalid(f"requirements[{k!r}]: {v}, want a finite number >= 0")
    need_cpu = req.requirements.get("cpu", 0.0)
    need_mem = req.requirements.get("memory", 0.0)
    seen = set()
    out = []
    for i, node in enumerate(req.available_nodes):
        if not node.node_id:
            raise Invalid(f"available_nodes[{i}].node_id: empty")
        if node.node_id in seen:
            raise Invalid(f"available_nodes[{i}].node_id: {node.node_id!r} appears twice")
        seen.add(node.node_id)
        cpu = finite(f"available_nodes[{i}].cpu_available", node.cpu_available)
        mem = finite(f"available_nodes[{i}].memory_available", node.memory_available)
        if cpu <= 0 or mem <= 0 or cpu < need_cpu or mem < need_mem:
            continue
        score = 0.5 * (1.0 - need_cpu / cpu) + 0.5 * (1.0 - need_mem / mem)
        why = f"cpu {cpu:g} free for {need_cpu:g} required, memory {mem:g} free for {need_mem:g} required"
        out.append((node.node_id, score, why))
    out.sort(key=lambda c: (-c[1], c[0]))
    return out, (out[0][1] if out else 0.0)


class Faults:
    """The injected faults of --delay-ms, --error-rate and --malformed. Safe for concurrent use."""

    def __init__(self, delay_ms, error_rate, seed, malformed):
        self.delay = delay_ms / 1000.0
        self.error_rate = error_rate
        self.malformed = malformed
        self._lock = threading.Lock()  # guards _rng
        self._rng = random.Random(seed)

    def draw(self, n=1):
        """Whether to inject an error into a call of n answers: n draws (none when the error rate is
        0), failing when any of them does."""
        if self.error_rate <= 0:
            return False
        with self._lock:
            fails = [self._rng.random() < self.error_rate for _ in range(n)]
        return any(fails)

    def message(self):
        return f"injected error (--error-rate {self.error_rate})"

    def before(self, context):
        """Applies the delay and the error rate to one call; aborts the call to inject an error."""
        fail = self.draw()
        if self.delay > 0:
            done = threading.Event()
            context.add_callback(done.set)  # the client went away: stop waiting
            done.wait(self.delay)
        if fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, self.message())


def bandwidth_answer(req, malformed):
    """PredictBandwidth's answer to req, wrong as --malformed says; raises Invalid."""
    predictions, confidence = forecast(req.historical_metrics, req.horizon_minutes)
    if malformed:
        predictions.append(predictions[-1])
    return pb.BandwidthResponse(predictions=predictions, confidence=confidence, model_version=MODEL_VERSION)


def anomaly_answer(req, malformed):
    """DetectAnomaly's answer to req, wrong as --malformed says; raises Invalid."""
    if not req.HasField("current_metrics"):
        raise Invalid("current_metrics: missing")
    is_anomaly, score, kind, severity = anomaly(req.current_metrics)
    if malformed:
        score = 2.0
    return pb.AnomalyResponse(is_anomaly=is_anomaly, score=score, anomaly_type=kind, severity=severity)


def placement_answer(req, malformed):
    """OptimizePlacement's answer to req, wrong as --malformed says; raises Invalid."""
    ranked, overall = placement(req)
    if malformed:
        ranked.append(("no-such-node", 0.5, "injected (--malformed)"))
    return pb.PlacementResponse(
        candidates=[pb.PlacementCandidate(node_id=n, score=s, reasoning=r) for n, s, r in ranked],
        overall_confidence=overall,
    )


class AIService:
    """novacron.ai.AIService with the heuristic of the module doc."""

    def __init__(self, faults):
        self.faults = faults

    def _answer(self, fn, req, context):
        self.faults.before(context)
        try:
            return fn(req, self.faults.malformed)
        except Invalid as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    def PredictBandwidth(self, req, context):
        return self._answer(bandwidth_answer, req, context)

    def DetectAnomaly(self, req, context):
        return self._answer(anomaly_answer, req, context)

    def OptimizePlacement(self, req, context):
        return self._answer(placement_answer, req, context)


def health_check(req, context):
    if req.service not in ("", SERVICE):
        context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {req.service!r}")
    return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


def unary(fn, req_cls, resp_cls):
    return grpc.unary_unary_rpc_method_handler(
        fn, request_deserializer=req_cls.FromString, response_serializer=resp_cls.SerializeToString
    )


def handlers(svc, with_health):
    out = [
        grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "PredictBandwidth": unary(svc.PredictBandwidth, pb.BandwidthRequest, pb.BandwidthResponse),
                "OptimizePlacement": unary(svc.OptimizePlacement, pb.PlacementRequest, pb.PlacementResponse),
                "DetectAnomaly": unary(svc.DetectAnomaly, pb.AnomalyRequest, pb.AnomalyResponse),
            },
        )
    ]
    if with_health:
        out.append(
            grpc.method_handlers_generic_handler(
                "grpc.health.v1.Health",
                {"Check": unary(health_check, health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse)},
            )
        )
    return out


# The HTTP/JSON routes.

HEALTH_PATH = "/healthz"
MAX_BODY = 16 << 20  # bytes of a request body


class HTTPError(Exception):
    """An HTTP answer other than 200: status and the detail of its {"detail": ...} body."""

    def __init__(self, status, detail):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def parse_message(data, cls, where=""):
    """A cls from proto3 JSON (a str or a dict); HTTPError 400 when it is not one."""
    msg = cls()
    try:
        if isinstance(data, dict):
            json_format.ParseDict(data, msg, ignore_unknown_fields=True)
        else:
            json_format.Parse(data, msg, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError) as e:
        raise HTTPError(400, f"{where}not a valid {cls.DESCRIPTOR.name} JSON object: {e}") from None
    return msg


def message_json(msg):
    """msg as proto3 JSON under the proto field names: json_format.MessageToJson's, as a dict."""
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def parse_batch(body):
    """The BandwidthRequests of a {"vms": [...]} body (the sidecar's BandwidthBatchRequest, which the
    seed's proto lacks: its other fields are ignored, as unknown fields are)."""
    try:
        obj = json.loads(body, object_pairs_hook=no_duplicates)
    except ValueError as e:  # also UnicodeDecodeError
        raise HTTPError(400, f"not a valid JSON object: {e}") from None
    if not isinstance(obj, dict):
        raise HTTPError(400, f'body: a JSON {type(obj).__name__}, want an object {{"vms": [...]}}')
    vms = obj.get("vms")
    if vms is None:  # proto3 JSON: absent or null is the empty list
        vms = []
    if not isinstance(vms, list):
        raise HTTPError(400, f"vms: a JSON {type(vms).__name__}, want a list of BandwidthRequest")
    return [parse_message(v, pb.BandwidthRequest, f"vms[{i}]: ") for i, v in enumerate(vms)]


class HTTPRoutes:
    """The seed's HTTP/JSON routes over the heuristic and the faults of the gRPC service."""

    def __init__(self, faults):
        self.faults = faults
        self.post = {
            "/api/v1/predict": self.one(pb.BandwidthRequest, bandwidth_answer),
            "/api/v1/predict/batch": self.predict_batch,
            "/api/v1/anomaly": self.one(pb.AnomalyRequest, anomaly_answer),
            "/api/v1/placement": self.one(pb.PlacementRequest, placement_answer),
        }

    def answer(self, fn, req, where=""):
        try:
            return message_json(fn(req, self.faults.malformed))
        except Invalid as e:
            raise HTTPError(400, f"{where}{e}") from None

    def one(self, cls, fn):
        def route(body, hold):
            req = parse_message(body, cls)
            self.before(1, hold)
            return self.answer(fn, req)

        return route

    def predict_batch(self, body, hold):
        reqs = parse_batch(body)
        self.before(len(reqs), hold)
        results = [self.answer(bandwidth_answer, r, f"vms[{i}]: ") for i, r in enumerate(reqs)]
        return {"results": results} if results else {}  # proto3 JSON leaves an empty list out

    def before(self, n, hold):
        """The faults of a call of n answers, as Faults.before applies them to a gRPC call: the
        draws, then the delay (hold returns False when the client went away), then the error."""
        fail = self.faults.draw(n)
        if self.faults.delay > 0 and not hold(self.faults.delay):
            raise ConnectionAbortedError("the client went away during --delay-ms")
        if fail:
            raise HTTPError(503, self.faults.message())


class HTTPHandler(http.server.BaseHTTPRequestHandler):
    """One connection of the HTTP server; self.server is an HTTPServer."""

    protocol_version = "HTTP/1.1"  # keep-alive: every answer has a Content-Length
    # Headers and body are two writes: without TCP_NODELAY, Nagle and delayed ACKs hold every
    # answer after a connection's first for 40ms.
    disable_nagle_algorithm = True

    def version_string(self):
        return f"seed_server ({MODEL_VERSION})"

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        log.debug("http %s: %s", self.address_string(), format % args)

    def reply(self, status, obj, close=False, allow=None):
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if allow:
            self.send_header("Allow", allow)
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (a bad request line, an unsupported method), as JSON."""
        self.reply(code, {"detail": message or self.responses.get(code, ("error",))[0]}, close=True)

    def wrong_method(self, path, allowed):
        """404 for an unknown path, 405 for a known one asked with another method."""
        if path not in self.server.routes.post and path != HEALTH_PATH:
            self.reply(404, {"detail": "Not Found"}, close=self.close_connection)
        else:
            self.reply(405, {"detail": "Method Not Allowed"}, close=self.close_connection, allow=allowed)

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == HEALTH_PATH:
            self.reply(200, {"status": "SERVING"})
        else:
            self.wrong_method(path, "POST")

    do_HEAD = do_GET

    def do_POST(self):
        path = urlsplit(self.path).path
        route = self.server.routes.post.get(path)
        if route is None:
            # The body is not read: close the connection rather than parse it as the next request.
            self.close_connection = True
            self.wrong_method(path, "GET, HEAD")
            return
        try:
            body = self.read_body()
            with self.server.workers:
                out = route(body, self.hold)
        except HTTPError as e:
            self.reply(e.status, {"detail": e.detail}, close=self.close_connection)
            return
        except ConnectionAbortedError:
            self.close_connection = True
            return
        except Exception as e:  # a bug of this server: say so rather than drop the connection
            log.exception("http POST %s", path)
            self.reply(500, {"detail": f"internal error: {e!r}"}, close=True)
            return
        self.reply(200, out)

    def do_other(self):
        self.close_connection = True
        path = urlsplit(self.path).path
        self.wrong_method(path, "GET, HEAD" if path == HEALTH_PATH else "POST")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_other

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise HTTPError(411, "a chunked body is not supported: send Content-Length")
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            n = -1
        if n < 0:
            self.close_connection = True
            raise HTTPError(400, f"Content-Length: {self.headers.get('Content-Length')!r}, want a number of bytes")
        if n > MAX_BODY:
            self.close_connection = True
            raise HTTPError(413, f"body of {n} bytes, larger than {MAX_BODY}")
        return self.rfile.read(n)

    def hold(self, seconds):
        """Waits seconds (--delay-ms); returns False, early, when the client closes the connection,
        and True, early, when the server stops."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            r, _, _ = select.select([self.connection, self.server.stopping_fd], [], [], left)
            if self.server.stopping_fd in r:
                return True
            if r:
                try:
                    peek = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    peek = b""
                if not peek:
                    return False  # end of file: the client went away
                # The bytes of a next request (pipelined): the client is still there.
                self.server.stopping.wait(max(0.0, deadline - time.monotonic()))
                return True
        return True


class HTTPServer(http.server.ThreadingHTTPServer):
    """A thread per connection (daemon threads: a connection never holds the process up)."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address, routes, workers):
        self.routes = routes
        self.workers = threading.BoundedSemaphore(workers)  # --workers answers in progress
        self.stopping = threading.Event()
        self._stop_r, self._stop_w = os.pipe()  # readable once stopping: wakes the held answers
        self.stopping_fd = self._stop_r
        super().__init__(address, HTTPHandler)

    def handle_error(self, request, client_address):
        """A connection that failed (the client went away mid-answer): one line, not a traceback."""
        log.debug("http %s: %s", client_address, sys.exc_info()[1])

    def stop(self):
        """Stops serving: wakes the held answers, ends serve_forever and closes the socket."""
        self.stopping.set()
        os.write(self._stop_w, b"x")
        self.shutdown()
        self.server_close()


class HTTPServer6(HTTPServer):
    address_family = socket.AF_INET6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=50051, help="port; 0 picks a free one (default 50051)")
    p.add_argument("--workers", type=int, default=16, help="calls served at once (default 16)")
    p.add_argument("--delay-ms", type=float, default=0, help="latency added to every call, in ms")
    p.add_argument("--error-rate", type=float, default=0, help="fraction of calls answered UNAVAILABLE")
    p.add_argument("--seed", type=int, default=1, help="seed of the --error-rate draws (default 1)")
    p.add_argument("--malformed", action="store_true", help="answer every call wrongly (see the doc)")
    p.add_argument(
        "--http-port", type=int, default=None, metavar="N",
        help="also serve the HTTP/JSON routes on this port; 0 picks a free one (default: not served)",
    )
    p.add_argument("--no-health", action="store_true", help="do not serve grpc.health.v1")
    p.add_argument("--ignore-stdin", action="store_true", help="keep running when stdin closes")
    args = p.parse_args(argv)
    if not 0 <= args.error_rate <= 1:
        p.error("--error-rate must be in [0, 1]")
    if args.delay_ms < 0 or args.workers < 1:
        p.error("--delay-ms must be >= 0 and --workers >= 1")
    if args.http_port is not None and not 0 <= args.http_port <= 65535:
        p.error("--http-port must be in [0, 65535]")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="seed_server: %(message)s")

    faults = Faults(args.delay_ms, args.error_rate, args.seed, args.malformed)
    # so_reuseport 0: binding a port another process holds must fail, not share it silently.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers), options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(handlers(AIService(faults), not args.no_health))
    host = f"[{args.host}]" if ":" in args.host else args.host
    try:
        port = server.add_insecure_port(f"{host}:{args.port}")
    except RuntimeError as e:  # newer grpcio raises; 1.51 returns 0
        port, why = 0, e
    else:
        why = "address in use or not available"
    if port == 0:
        log.error("cannot listen on %s:%d: %s", host, args.port, why)
        return 1
    httpd = None
    if args.http_port is not None:
        cls = HTTPServer6 if ":" in args.host else HTTPServer
        try:
            httpd = cls((args.host, args.http_port), HTTPRoutes(faults), args.workers)
        except OSError as e:
            log.error("cannot listen on %s:%d for HTTP: %s", host, args.http_port, e)
            server.stop(None)
            return 1

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if not args.ignore_stdin:

        def watch_stdin():
            try:
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            stop.set()

        threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()

    server.start()
    print(f"listening on {host}:{port}", flush=True)
    if httpd is not None:
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True).start()
        print(f"http listening on {host}:{httpd.server_address[1]}", flush=True)
    log.info(
        "serving %s (%s) delay_ms=%g error_rate=%g seed=%d malformed=%s health=%s http=%s",
        SERVICE, MODEL_VERSION, args.delay_ms, args.error_rate, args.seed, args.malformed, not args.no_health,
        "off" if httpd is None else httpd.server_address[1],
    )
    while not stop.wait(0.5):
        pass
    stopped = server.stop(grace=1.0)
    if httpd is not None:
        httpd.stop()
    stopped.wait()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
