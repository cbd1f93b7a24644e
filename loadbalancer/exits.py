"""The exit codes of ``lb``, by name (the README's table lists them)."""

EXIT_OK = 0
EXIT_FAILURE = 1  # a runtime failure: an unreachable node, a port in use, a failed verification
EXIT_USAGE = 2  # a bad argument, config or input: nothing ran
EXIT_JOBS_FAILED = 3  # the run finished, every other result was written, but some jobs failed
# Stopped by a signal, the run unfinished: 128 + the signal's number, as a shell reports a
# process the signal killed. Not 0, which says every job succeeded; not 1, a failure:
# contrib/lb@.service counts 143 (systemctl stop) as a clean stop.
EXIT_INTERRUPTED = 130  # SIGINT, Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM
