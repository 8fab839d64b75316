"""The ways of running jobs, by the name the `runner` setting gives: each "module:Class".

Names only, nothing imported: the settings check a `runner` against this
table, and runners/__init__.py imports the one chosen.
"""

RUNNERS = {
    "local": "bgremover.runners.local:LocalRunner",  # fresh processes on this machine, from the fork server
    "celery": "bgremover.runners.celery.runner:CeleryRunner",  # `bgremover worker` hosts, through a Redis broker
}
