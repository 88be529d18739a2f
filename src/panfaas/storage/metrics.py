"""Prometheus metrics of the storage element (served at /metrics on the door)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter("panfaas_storage_requests_total", "Door requests by method and status",
                   ["method", "status"], registry=REGISTRY)
BYTES_IN = Counter("panfaas_storage_bytes_received_total", "Bytes of uploads stored", registry=REGISTRY)
BYTES_OUT = Counter("panfaas_storage_bytes_sent_total", "Bytes of downloads sent", registry=REGISTRY)
BILLING = Counter("panfaas_storage_billing_messages_total", "Billing messages published",
                  ["msgType", "cellType"], registry=REGISTRY)
BILLING_FAILED = Counter("panfaas_storage_billing_failures_total",
                         "Billing messages that could not be published", registry=REGISTRY)
SSE_EVENTS = Counter("panfaas_storage_sse_events_total", "inotify events put into SSE channels",
                     registry=REGISTRY)
SSE_CHANNELS = Gauge("panfaas_storage_sse_channels", "Open SSE channels", registry=REGISTRY)
SSE_WATCHES = Gauge("panfaas_storage_sse_watches", "Active inotify subscriptions", registry=REGISTRY)


def render() -> bytes:
    return generate_latest(REGISTRY)
