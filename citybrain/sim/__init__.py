"""Simulators for the demo: they talk to the server over HTTP/MQTT as real devices and people do."""
