"""The event router: dCache's "dynamic processing", as a small asyncio service.

Reads storage events (the Kafka `billing` topic, or dCache's inotify SSE
channels), matches every rule of a dynamic-processing YAML configuration
(plus panfaas extensions) against each event, asks the storage door for
pre-authorised URLs (macaroons) and publishes one task per matching rule on
the rule's `target` topic. Delivery is at-least-once; what cannot become a
task goes to the dead-letter topic with the reason.

Modules: config (YAML, validation with line numbers), rules (matching,
derived paths), urls (macaroons, MKCOL), tasks (task and dead-letter
messages), sources (Kafka), sse (dCache SSE), service (the loop, metrics,
/healthz), cli. Reference: shared/reference/dcache-events-macaroons-cxi.md §4.
"""

from .config import RouterConfig, RouterConfigError, check, from_dict, parse_rules
from .config import load as load_config
from .rules import DeriveError, Rule, UrlSpec, matching_rules
from .tasks import event_digest, make_task, task_id

__all__ = ["DeriveError", "RouterConfig", "RouterConfigError", "Rule", "UrlSpec", "check", "derive",
           "event_digest", "from_dict", "load_config", "make_task", "matching_rules", "parse_rules", "serve",
           "task_id"]


def derive(path: str, spec: UrlSpec) -> str:
    """The path a URL of a rule names for an event's path (derived-path applied);
    DeriveError if its `replacing` does not occur in the path."""
    return spec.derive(path)


def serve(conf_path: str) -> int:
    from .cli import serve as _serve
    return _serve(conf_path)
