"""Entities, activation records and the queue of accepted activations, in SQLite (WAL).

Three tables:

entities     actions, triggers, rules, packages and feeds, one JSON document each
activations  the activation records, plus what replay needs and the API never shows:
             the arguments the activation was invoked with (`args`) and its `kind`
             (action, sequence, component (of a sequence), trigger, feed)
pending      activations that were accepted (202) and have no record yet. A record and
             the removal of its pending row are one transaction, so after a crash
             (kill -9) every accepted activation is either recorded or still pending,
             and `Runtime.recover()` runs what is pending: nothing accepted is lost.

WAL mode lets `panfaas runtime replay` and operators read the database while the
runtime writes it.
"""

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
  id TEXT PRIMARY KEY, namespace TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL,
  kind TEXT NOT NULL, start INTEGER NOT NULL, status_code INTEGER, cause TEXT,
  doc TEXT NOT NULL, args TEXT);
CREATE INDEX IF NOT EXISTS activations_by_time ON activations (namespace, start DESC);
CREATE INDEX IF NOT EXISTS activations_by_name ON activations (namespace, name, start DESC);
CREATE INDEX IF NOT EXISTS activations_by_path ON activations (namespace, path, start DESC);
CREATE TABLE IF NOT EXISTS pending (
  id TEXT PRIMARY KEY, namespace TEXT NOT NULL, action TEXT NOT NULL, args TEXT NOT NULL,
  cause TEXT, blocking INTEGER NOT NULL, queued INTEGER NOT NULL);
"""

SUMMARY_FIELDS = ("namespace", "name", "version", "publish", "annotations", "activationId", "start",
                  "end", "duration", "statusCode", "cause")


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def summary(doc: dict) -> dict:
    """An activation as the list view shows it without `docs=true` (no response, no logs)."""
    return {k: doc[k] for k in SUMMARY_FIELDS if k in doc}


class Store:
    """One connection and one lock, shared by the event loop and worker threads."""

    def __init__(self, path: str | Path, readonly: bool = False):
        path = Path(path)
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False,
                                      isolation_level=None)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed transaction survives a crash of this process
            # (kill -9); only a power loss can take the last ones.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        self.db.execute("PRAGMA busy_timeout=5000")
        self.lock = threading.Lock()

    def journal_mode(self) -> str:
        with self.lock:
            return self.db.execute("PRAGMA journal_mode").fetchone()[0]

    # -- entities ---------------------------------------------------------
    def get(self, namespace: str, kind: str, name: str) -> dict | None:
        with self.lock:
            row = self.db.execute("SELECT doc FROM entities WHERE namespace=? AND kind=? AND name=?",
                                  (namespace, kind, name)).fetchone()
        return json.loads(row[0]) if row else None

    def kind_of(self, namespace: str, name: str) -> str | None:
        """The collection an entity name belongs to (names are unique across collections)."""
        with self.lock:
            row = self.db.execute("SELECT kind FROM entities WHERE namespace=? AND name=? AND kind!='feeds'",
                                  (namespace, name)).fetchone()
        return row[0] if row else None

    def put(self, namespace: str, kind: str, name: str, doc: dict, updated: int) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO entities VALUES (?,?,?,?,?)",
                            (namespace, kind, name, json.dumps(doc), updated))

    def delete(self, namespace: str, kind: str, name: str) -> bool:
        with self.lock:
            cur = self.db.execute("DELETE FROM entities WHERE namespace=? AND kind=? AND name=?",
                                  (namespace, kind, name))
        return cur.rowcount > 0

    @staticmethod
    def _of_kind(namespace: str, kind: str, prefix: str | None) -> tuple[str, list[Any]]:
        q = " FROM entities WHERE namespace=? AND kind=?"
        args: list[Any] = [namespace, kind]
        if prefix is not None:
            q += " AND name LIKE ? ESCAPE '\\'"
            args.append(_like_prefix(prefix))
        return q, args

    def list(self, namespace: str, kind: str, prefix: str | None = None, *, limit: int = -1,
             skip: int = 0) -> list[dict]:
        where, args = self._of_kind(namespace, kind, prefix)
        with self.lock:
            rows = self.db.execute(f"SELECT doc{where} ORDER BY updated DESC, name LIMIT ? OFFSET ?",
                                   [*args, limit, skip]).fetchall()
        return [json.loads(r[0]) for r in rows]

    def count(self, namespace: str, kind: str, prefix: str | None = None) -> int:
        where, args = self._of_kind(namespace, kind, prefix)
        with self.lock:
            return self.db.execute(f"SELECT COUNT(*){where}", args).fetchone()[0]

    def all(self, kind: str) -> Iterable[tuple[str, dict]]:
        with self.lock:
            rows = self.db.execute("SELECT namespace, doc FROM entities WHERE kind=?", (kind,)).fetchall()
        return [(ns, json.loads(d)) for ns, d in rows]

    # -- the queue of accepted activations --------------------------------
    def enqueue(self, rows: list[tuple[str, str, str, Any, str | None, bool, int]],
                record: dict | None = None, record_args: Any = None, record_kind: str = "trigger") -> None:
        """Pending activations (id, namespace, action, args, cause, blocking, queued), and
        optionally the record that caused them (a trigger's), in one transaction."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany("INSERT INTO pending VALUES (?,?,?,?,?,?,?)",
                                    [(i, ns, a, json.dumps(args), c, int(b), q)
                                     for i, ns, a, args, c, b, q in rows])
                if record is not None:
                    self._insert_activation(record, record_args, record_kind)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def pending(self) -> list[dict]:
        with self.lock:
            rows = self.db.execute("SELECT id, namespace, action, args, cause, blocking, queued FROM pending "
                                   "ORDER BY queued").fetchall()
        return [{"id": r[0], "namespace": r[1], "action": r[2], "args": json.loads(r[3]), "cause": r[4],
                 "blocking": bool(r[5]), "queued": r[6]} for r in rows]

    # -- activations ------------------------------------------------------
    def _insert_activation(self, act: dict, args: Any, kind: str) -> None:
        path = next((a["value"] for a in act.get("annotations", []) if a.get("key") == "path"), act["name"])
        self.db.execute("INSERT OR REPLACE INTO activations VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (act["activationId"], act["namespace"], act["name"], path, kind, act["start"],
                         act.get("statusCode"), act.get("cause"), json.dumps(act),
                         None if args is None else json.dumps(args)))

    def put_activation(self, act: dict, args: Any = None, kind: str = "action") -> None:
        """Record an activation and drop it from the pending queue, atomically."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self._insert_activation(act, args, kind)
                self.db.execute("DELETE FROM pending WHERE id=?", (act["activationId"],))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def activation(self, namespace: str, aid: str) -> dict | None:
        with self.lock:
            row = self.db.execute("SELECT doc FROM activations WHERE id=? AND namespace=?",
                                  (aid, namespace)).fetchone()
        return json.loads(row[0]) if row else None

    def _where(self, namespace: str, name: str | None, since: int | None, upto: int | None,
               kinds: Iterable[str] | None = None, status: int | None = None) -> tuple[str, list]:
        q = " WHERE namespace=?"
        args: list[Any] = [namespace]
        if name:
            # 'action' matches the simple name, 'package/action' the path (as OpenWhisk's name filter)
            if "/" in name:
                q += " AND path=?"
                args.append(f"{namespace}/{name}")
            else:
                q += " AND name=?"
                args.append(name)
        if since is not None:
            q += " AND start>=?"
            args.append(since)
        if upto is not None:
            q += " AND start<=?"
            args.append(upto)
        if kinds:
            kinds = list(kinds)
            q += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += kinds
        if status is not None:
            q += " AND status_code=?"
            args.append(status)
        return q, args

    def activations(self, namespace: str, *, name: str | None = None, limit: int = 30,
                    skip: int = 0, since: int | None = None, upto: int | None = None) -> list[dict]:
        where, args = self._where(namespace, name, since, upto)
        with self.lock:
            rows = self.db.execute(f"SELECT doc FROM activations{where} ORDER BY start DESC LIMIT ? OFFSET ?",
                                   [*args, limit, skip]).fetchall()
        return [json.loads(r[0]) for r in rows]

    def count_activations(self, namespace: str, *, name: str | None = None, skip: int = 0,
                          since: int | None = None, upto: int | None = None) -> int:
        where, args = self._where(namespace, name, since, upto)
        with self.lock:
            n = self.db.execute(f"SELECT COUNT(*) FROM activations{where}", args).fetchone()[0]
        return max(n - skip, 0)

    def replayable(self, namespace: str, *, ids: list[str] | None = None, name: str | None = None,
                   since: int | None = None, upto: int | None = None, status: int | None = None,
                   limit: int = -1) -> list[dict]:
        """Activations with the arguments they ran with, oldest first, for replay.
        Without ids: action and sequence activations (sequence components, kind 'component',
        run again with their sequence)."""
        if ids:
            q = f"SELECT doc, args, kind FROM activations WHERE namespace=? AND id IN ({','.join('?' * len(ids))})"
            params: list[Any] = [namespace, *ids]
        else:
            where, params = self._where(namespace, name, since, upto, ("action", "sequence"), status)
            q = f"SELECT doc, args, kind FROM activations{where}"
        q += " ORDER BY start LIMIT ?"
        with self.lock:
            rows = self.db.execute(q, [*params, limit]).fetchall()
        return [{"record": json.loads(d), "args": json.loads(a) if a else {}, "kind": k} for d, a, k in rows]

    def prune(self, before_ms: int) -> int:
        """Drop activation records that started before `before_ms` (retention)."""
        with self.lock:
            return self.db.execute("DELETE FROM activations WHERE start<?", (before_ms,)).rowcount

    def close(self) -> None:
        with self.lock:
            self.db.close()
