"""Tests of transport/: the WebSocket endpoint over real sockets, hardening, faults."""
