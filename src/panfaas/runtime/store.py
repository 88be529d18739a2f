"""Entities (actions, triggers, rules, packages, feeds) and activations in SQLite (WAL)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
  namespace TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
  doc TEXT NOT NULL, updated INTEGER NOT NULL,
  PRIMARY KEY (namespace, kind, name));
CREATE TABLE IF NOT EXISTS activations (
  id TEXT PRIMARY KEY, namespace TEXT NOT NULL, name TEXT NOT NULL,
  start INTEGER NOT NULL, status_code INTEGER, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS activations_by_time ON activations (namespace, start DESC);
CREATE INDEX IF NOT EXISTS activations_by_name ON activations (namespace, name, start DESC);
"""


class Store:
    """Thread-safe (one connection, one lock): the API runs on one event loop anyway."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()

    # -- entities ---------------------------------------------------------
    def get(self, namespace: str, kind: str, name: str) -> dict | None:
        with self.lock:
            row = self.db.execute("SELECT doc FROM entities WHERE namespace=? AND kind=? AND name=?",
                                  (namespace, kind, name)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, namespace: str, kind: str, name: str, doc: dict, updated: int) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO entities VALUES (?,?,?,?,?)",
                            (namespace, kind, name, json.dumps(doc), updated))

    def delete(self, namespace: str, kind: str, name: str) -> bool:
        with self.lock:
            cur = self.db.execute("DELETE FROM entities WHERE namespace=? AND kind=? AND name=?",
                                  (namespace, kind, name))
        return cur.rowcount > 0

    def list(self, namespace: str, kind: str, prefix: str | None = None) -> list[dict]:
        q = "SELECT doc FROM entities WHERE namespace=? AND kind=?"
        args: list[Any] = [namespace, kind]
        if prefix is not None:
            q += " AND name LIKE ? ESCAPE '\\'"
            args.append(prefix.replace("%", "\\%").replace("_", "\\_") + "%")
        with self.lock:
            rows = self.db.execute(q + " ORDER BY updated DESC", args).fetchall()
        return [json.loads(r[0]) for r in rows]

    def all(self, kind: str) -> Iterable[tuple[str, dict]]:
        with self.lock:
            rows = self.db.execute("SELECT namespace, doc FROM entities WHERE kind=?", (kind,)).fetchall()
        return [(ns, json.loads(d)) for ns, d in rows]

    # -- activations ------------------------------------------------------
    def put_activation(self, act: dict) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO activations VALUES (?,?,?,?,?,?)",
                            (act["activationId"], act["namespace"], act["name"], act["start"],
                             act.get("statusCode"), json.dumps(act)))

    def activation(self, namespace: str, aid: str) -> dict | None:
        with self.lock:
            row = self.db.execute("SELECT doc FROM activations WHERE id=? AND namespace=?",
                                  (aid, namespace)).fetchone()
        return json.loads(row[0]) if row else None

    def activations(self, namespace: str, *, name: str | None = None, limit: int = 30,
                    skip: int = 0, since: int | None = None, upto: int | None = None) -> list[dict]:
        q = "SELECT doc FROM activations WHERE namespace=?"
        args: list[Any] = [namespace]
        if name:
            q += " AND name=?"
            args.append(name)
        if since is not None:
            q += " AND start>=?"
            args.append(since)
        if upto is not None:
            q += " AND start<=?"
            args.append(upto)
        q += " ORDER BY start DESC LIMIT ? OFFSET ?"
        args += [limit, skip]
        with self.lock:
            rows = self.db.execute(q, args).fetchall()
        return [json.loads(r[0]) for r in rows]

    def close(self) -> None:
        with self.lock:
            self.db.close()
