"""panfaas: storage events -> tasks -> functions, for photon and neutron facilities.

One module per concern (see docs/architecture.md):
events (dCache event formats), macaroons, storage (local storage element),
router (dynamic processing), runtime (OpenWhisk-compatible function runtime),
client (what notebooks and scripts use), cli (entry points).
"""

__version__ = "0.1.0"
