"""``python -m emrflow.runtime.jobmanager``: run a JobManager process."""

from emrflow.runtime.jobmanager.server import main

main()
