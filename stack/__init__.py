"""The embedded lab: what a run starts around the system under test, all on loopback.

- ``embedded``: ``up()`` / ``down()`` / ``status()`` of a whole stack (``python -m stack up|down|status``)
- ``state``: the state file, the one record of what was started (chaos refuses anything not in it)
- ``processes``: launching, checking and stopping local processes; free ports
- ``broker``, ``docker_broker``, ``postgres``: the Tansu broker (process or container) and PostgreSQL
- ``proxy/``: the Toxiproxy-compatible server in front of the broker and the database, and its client
- ``system``: what it starts of the system under test (our nodes): the only module that imports ``nodes``
"""
