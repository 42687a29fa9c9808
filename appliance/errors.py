"""kpc's exception hierarchy.

Every error below the CLI is a KpcError carrying a message (what went wrong, where) and an
optional hint (how to fix it). The CLI layer turns it into one block of text and an exit code;
nothing else prints or exits.
"""

from __future__ import annotations


class KpcError(Exception):
    """Base of every error kpc reports to an operator."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(KpcError):
    """The site configuration (or another input file) is missing or invalid."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, problems: list[str] | None = None):
        super().__init__(message, hint)
        self.problems = problems or []


class UsageError(KpcError):
    """The command was called with arguments that cannot work."""

    exit_code = 2


class SecretError(KpcError):
    """A secret reference cannot be resolved (never carries the secret itself)."""

    exit_code = 2


class CommandFailed(KpcError):
    """An external program failed. Carries argv (already free of secrets), code and output."""

    def __init__(
        self,
        argv: list[str],
        returncode: int,
        output: str = "",
        hint: str | None = None,
    ) -> None:
        shown = " ".join(argv)
        tail = "\n".join(output.strip().splitlines()[-20:])
        message = f"command failed with exit code {returncode}: {shown}"
        if tail:
            message += f"\n{tail}"
        super().__init__(message, hint)
        self.argv = argv
        self.returncode = returncode
        self.output = output


class ToolMissing(KpcError):
    """A program or package kpc needs is not installed."""

    def __init__(self, tool: str, package: str | None = None) -> None:
        hint = f"install it: apt-get install {package}" if package else None
        super().__init__(f"{tool} is not installed", hint)
        self.tool = tool


class DockerError(KpcError):
    """The Docker engine is unreachable or a container operation failed."""


class StateError(KpcError):
    """The machine registry refused an operation (unknown machine, bad transition)."""


class RegistryUnavailable(StateError):
    """The registry cannot take a write now (busy, locked, disk full, read-only, slow):
    nothing was changed; the same request may be retried later."""

    retry_after = 5


class BmcError(KpcError):
    """An IPMI operation failed (no answer, bad credentials, busy, unsupported)."""


class Aborted(KpcError):
    """The operator declined a confirmation; nothing was changed."""

    exit_code = 3
