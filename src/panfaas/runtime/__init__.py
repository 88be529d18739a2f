"""The embedded function runtime: OpenWhisk's REST API and action protocol on one machine.

store     SQLite (WAL): entities, activation records, the queue of accepted activations
entities  what a PUT stores (OpenWhisk's create and update semantics)
catalog   the entities of each namespace, and resolving an action through its package
limits    per-namespace throttles (429) and the invoker's memory pool
executor  warm action processes (python launcher protocol), blackbox exec, their limits
feeds     the /whisk.system/messaging/kafkaFeed provider
service   invocations, sequences, trigger fires, activation records, recovery
api       the REST API (aiohttp); openapi: its document
server    wiring and `serve()`; replay: `panfaas runtime replay`
"""
