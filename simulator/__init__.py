"""A simulated Xiaozhi device, for trying and benchmarking the integration.

``python -m simulator --ha http://localhost:8123`` (or ``scripts/simulate-device``)
pairs like the firmware, says one utterance and prints the exchange and its
timing; see :mod:`simulator.cli`. :class:`simulator.device.SimulatedDevice` is
the device itself, used by the tests and the benchmarks. Only aiohttp, PyAV and
numpy are needed: it imports the integration's protocol package
(``custom_components.xiaozhi.protocol``), which does not import Home Assistant.
"""
