"""Prometheus metrics of a line run (``ffrt run --metrics-port N``).

Needs the optional extra ``metrics`` (prometheus-client); nothing else in ffrt imports it.
Served on loopback unless ``--metrics-host`` says otherwise: the endpoint has no
authentication, and a line PC's other interfaces face the plant network.

    ffrt_stage_latency_seconds{source,stage}   histogram per frame: queue, preprocess,
                                               inference, postprocess, total
    ffrt_frames_total{source,outcome}          counter: pass, fail, error, dropped, refused
    ffrt_throughput_fps{source}                frames scored per second, recent window
    ffrt_reject_rate{source}                   share of FAIL among the recent scored frames
    ffrt_queue_depth                           frames waiting in the Detector's queue
    ffrt_source_up{source}                     1 while the source delivers frames, 0 once it ended
    ffrt_drift{state}                          1 for the Detector's current drift state
    ffrt_drift_value{stat}                     the numbers behind it (recent median, share above threshold, ...)

Counters and histograms are updated as frames are written; the gauges are read from the
run when Prometheus scrapes (a custom collector), so a scrape sees the state of that moment.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import FFRTError

EXTRA = "metrics"
#: Latency buckets in seconds: sub-millisecond preprocessing up to multi-second stalls.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class MetricsUnavailableError(FFRTError, ImportError):
    """prometheus-client (the ``metrics`` extra) is not installed."""


def require_prometheus():
    try:
        import prometheus_client
    except ImportError:
        raise MetricsUnavailableError(
            f"--metrics-port needs the optional extra '{EXTRA}' (the prometheus-client package): "
            f'pip install "ffrt[{EXTRA}]", or run without --metrics-port'
        ) from None
    return prometheus_client


class RunMetrics:
    """The registry of one run and its HTTP endpoint.

    ``snapshot()`` is called at each scrape and returns
    ``{"queue_depth": int, "sources": {name: {"fps", "reject_rate", "up"}}, "drift": {"state": str, name: number...}}``
    (``drift`` may be None).
    """

    def __init__(self, snapshot: Callable[[], dict]) -> None:
        pc = require_prometheus()
        self.registry = pc.CollectorRegistry()
        self.latency = pc.Histogram(
            "ffrt_stage_latency_seconds", "Per-frame latency of each pipeline stage, seconds.",
            ["source", "stage"], buckets=BUCKETS, registry=self.registry,
        )
        self.frames = pc.Counter(
            "ffrt_frames", "Frames by outcome: pass, fail (rejected part), error (unreadable or corrupt), "
            "dropped (queue policy drop_oldest), refused (queue policy reject).",
            ["source", "outcome"], registry=self.registry,
        )
        self.registry.register(_Live(snapshot))
        self._server = None
        self._thread = None

    def observe(self, source: str, outcome: str, latencies_ms: dict[str, float] | None = None) -> None:
        self.frames.labels(source, outcome).inc()
        for stage, ms in (latencies_ms or {}).items():
            if ms is not None:
                self.latency.labels(source, stage).observe(ms / 1000.0)

    def serve(self, host: str, port: int) -> int:
        """Start the endpoint; returns the port (the one the OS picked for port 0)."""
        pc = require_prometheus()
        try:
            # prometheus-client >= 0.20 returns the server and its thread, so the run can stop it.
            self._server, self._thread = pc.start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise FFRTError(f"--metrics-port {port} on {host}: cannot listen ({e.strerror or e}); choose another port") from e
        return self._server.server_address[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()  # release the port now (prometheus/client_python#1068)
            self._thread.join(timeout=5)
            self._server = None


class _Live:
    """Gauges computed at scrape time from the run's snapshot."""

    def __init__(self, snapshot: Callable[[], dict]) -> None:
        self._snapshot = snapshot

    def describe(self):
        return []  # no up-front description: the registry must not call snapshot() at registration

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        snap = self._snapshot()
        fps = GaugeMetricFamily("ffrt_throughput_fps", "Frames scored per second over the recent window.", labels=["source"])
        rej = GaugeMetricFamily("ffrt_reject_rate", "Share of rejected (FAIL) frames among the recent scored frames.", labels=["source"])
        up = GaugeMetricFamily("ffrt_source_up", "1 while the source delivers frames, 0 once it has ended.", labels=["source"])
        for name, s in snap.get("sources", {}).items():
            fps.add_metric([name], s["fps"])
            rej.add_metric([name], s["reject_rate"])
            up.add_metric([name], 1.0 if s["up"] else 0.0)
        yield from (fps, rej, up)
        yield GaugeMetricFamily("ffrt_queue_depth", "Frames waiting in the Detector's queue for a batch.", value=snap.get("queue_depth", 0))
        drift = snap.get("drift")
        if drift:
            state = GaugeMetricFamily("ffrt_drift", "1 for the Detector's current drift state.", labels=["state"])
            state.add_metric([str(drift.get("state"))], 1.0)
            yield state
            values = GaugeMetricFamily("ffrt_drift_value", "The statistics behind the drift state.", labels=["stat"])
            for k, v in drift.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    values.add_metric([k], float(v))
            yield values
