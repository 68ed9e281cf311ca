"""How devices reach the server: the transport seam and the WebSocket transport."""
