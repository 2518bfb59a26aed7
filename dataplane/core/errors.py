"""The project's exceptions. Each names the thing it is about; the CLI prints
the message on one line and exits with the class's code (grouped by cause)."""

import contextlib
import errno


class DataplaneError(Exception):
    exit_code = 1


class UsageError(DataplaneError):
    """Bad input: a VNI out of range, an address that does not parse."""

    exit_code = 2


class NotFound(DataplaneError):
    """A named thing (interface, namespace, endpoint, node) does not exist."""

    exit_code = 3


class Conflict(DataplaneError):
    """The thing exists already, or would clash with something that does."""

    exit_code = 4


class NotPermitted(DataplaneError):
    """Not root, or a capability is missing."""

    exit_code = 5


class ToolchainError(DataplaneError):
    """bcc, kernel headers or bpffs are missing, or the programs do not compile/verify."""

    exit_code = 6


class TryAgain(DataplaneError):
    """Passing: the registry is unreachable, or the agent did not answer in time. The same
    exit code as KernelError for the CLI; the CNI plugin answers it with the spec's code 11."""

    exit_code = 7


class KernelError(DataplaneError):
    """A netlink or bpf() call failed; the message names the object and the errno, and
    .errno holds it where the caller knew it."""

    exit_code = 7

    def __init__(self, msg: str, errno: int | None = None):
        super().__init__(msg)
        self.errno = errno


_BY_ERRNO = {errno.EACCES: NotPermitted, errno.EPERM: NotPermitted,   # EROFS and the rest: exit 1
             errno.ENOENT: NotFound, errno.ENOTDIR: NotFound, errno.EEXIST: Conflict, errno.EISDIR: Conflict}


@contextlib.contextmanager
def file_errors(what: str):
    """An OSError from the files of `what` becomes the error of its cause, naming the file."""
    try:
        yield
    except OSError as e:
        name = e.filename2 or e.filename             # a rename's target, else the file
        where = f" ({name})" if name else ""
        raise _BY_ERRNO.get(e.errno, DataplaneError)(f"{what}: {e.strerror or e}{where}") from None
