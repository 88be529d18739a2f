"""The embedded function runtime: OpenWhisk's REST API and action protocol on one machine.

store     SQLite (WAL) for entities and activation records
executor  warm action processes (python launcher protocol) and their limits
feeds     the /whisk.system/messaging/kafkaFeed provider
api       the REST API (aiohttp)
server    wiring and `serve()`
"""
