"""The gateway's HTTP/1.1 server: the front (see connection.py)."""
