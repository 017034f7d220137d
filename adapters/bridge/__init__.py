"""bridgestorm's own nodes as a system under test: the adapter (``adapter.py``) and the users that load them.

``adapter.py`` is the only module here that imports ``nodes``; ``users/`` drive
the nodes through it, ``batches.py`` holds what EventBatchUser sends (readable
without importing Locust).
"""
