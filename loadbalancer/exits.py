"""The exit codes of ``lb``, by name (the README's table lists them)."""

EXIT_OK = 0
EXIT_FAILURE = 1  # a runtime failure: an unreachable node, a port in use, a failed verification
EXIT_USAGE = 2  # a bad argument, config or input: nothing ran
EXIT_JOBS_FAILED = 3  # the run finished, every other result was written, but some jobs failed
EXIT_INTERRUPTED = 130  # Ctrl-C
