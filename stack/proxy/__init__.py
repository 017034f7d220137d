"""A Toxiproxy-compatible TCP proxy server and its client, for degrading the stack's links.

- ``addresses``: host:port and the loopback rule (faults never leave this machine)
- ``toxics``: latency, bandwidth, timeout, reset_peer, slicer, ... per connection
- ``wire``: proxies, connections and links: the bytes, with or without toxics
- ``api``: the Toxiproxy HTTP API over them
- ``process``: running the server (``python -m stack.proxy``), and ``ProxyServerProcess`` for tests
- ``client``: ``ToxiproxyClient``, for this server or a real ``toxiproxy-server``
"""
