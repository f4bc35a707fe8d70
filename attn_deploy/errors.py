"""The one error type the CLI turns into a message and exit code 2 (bad usage or input)."""


class AttnDeployError(Exception):
    """Bad input, an unusable checkpoint, a failed export or a missing backend: one clear message."""

    exit_code = 2
