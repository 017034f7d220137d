"""The Locust harness: generic load-test machinery that knows no particular system.

A locustfile calls ``harness.lifecycle.install(adapter)``; the adapter
(harness/adapter.py) says how to talk to the system under test. This package
face imports nothing: ``harness.adapter`` must stay importable without
Locust (importing Locust monkey-patches the process with gevent). Here:

- ``lifecycle``: the run's hooks (options, stack, chaos, drain, report, exit code) and ``install``
- ``context``: the run object on ``environment.bridgestorm``
- ``users``: ``RunMixin`` and ``KafkaUser``, the users' base classes
- ``kafka``: the process's producer and the end-to-end observer; ``aio``: the gevent/asyncio bridge
- ``recorder``: raw samples and ledger rows; ``pacing``: fixed-rate mode
- ``drain``: waiting for the system, then its truth; ``shapes``: load shapes; ``webui``: the web UI tabs
"""