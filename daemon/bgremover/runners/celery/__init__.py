"""Past one machine: Celery on a Redis broker as the transport between the supervisor and `bgremover worker` hosts.

Celery only carries messages. The supervisor stays the single authority over
every item (the SQLite state machine); a worker runs what it is sent through
the local runner, exactly as the daemon would on one machine, and answers with
the job's exit. Imported only when the celery runner or the worker command is.
"""
