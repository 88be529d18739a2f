"""Structured logging: one JSON object per line on stderr.

Services call `setup("router")` once; everything else uses the standard
`logging` module and passes structured fields with `extra={"fields": {...}}`.
"""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup(service: str, level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library chatter (aiokafka reconnects, cheroot access) stays at warning.
    for noisy in ("aiokafka", "kafka", "cheroot", "wsgidav", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fields(**kw) -> dict:
    """`log.info("msg", extra=fields(path=p))`: structured fields for one record."""
    return {"fields": kw}
