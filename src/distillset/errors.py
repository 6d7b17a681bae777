"""The errors a user can cause: each carries one sentence that names the cause and the fix.

The command line prints the message alone and exits with status 2; the Python API raises them.
"""


class DistillsetError(Exception):
    """Base class: bad input that the user can correct."""


class ConfigError(DistillsetError):
    """An invalid configuration key or value."""


class DataError(DistillsetError):
    """A dataset that is missing, corrupt or of the wrong format."""


class StoreError(DistillsetError):
    """A trajectory store, checkpoint or artifact that is missing, corrupt or made for another setting."""


class FileError(StoreError):
    """A file that one stage wrote and another reads, refused on read: `path`, what is wrong with it
    (`problem`) and what to do (`fix`), printed as one line."""

    def __init__(self, path: object, problem: str, fix: str):
        self.path, self.problem, self.fix = path, one_line(problem), fix
        super().__init__(one_line(f"{path}: {problem}; {fix}"))


def one_line(text: str) -> str:
    """`text` with its control characters escaped (a newline as \\n): what a file holds can reach a
    message (a tensor's name, a library's complaint about a header), and a message is one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def short_repr(value: object, limit: int = 40) -> str:
    """A value as a one-line message shows it: its repr, cut at `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CorruptFileError(FileError):
    """A file whose tensors do not match the checksum written with them (flipped bits, a cut copy, an
    edit)."""


class InvalidValuesError(FileError):
    """A file whose tensors hold what they cannot (NaN or Inf, the wrong dtype or shape, labels out of
    range) or disagree with the manifest beside them."""
