"""One small family of errors. Every message says what went wrong and how to fix it, in one line."""


class Phi3Error(Exception):
    """Base error of phi3_helpers; ``str(err)`` is one line that names the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def one_line(exc: BaseException) -> str:
    """``"ErrorType: message"`` on one line: how the notebooks, the chat and the demo show an error."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


class UnknownModel(Phi3Error):
    pass


class ModelFolderError(Phi3Error):
    """A model folder is missing, incomplete or corrupt."""


class UnknownBackend(Phi3Error):
    pass


class BackendUnavailable(Phi3Error):
    """The backend exists but its runtime is not installed on this machine."""


class UnknownPrecision(Phi3Error):
    pass


class UnknownDevice(Phi3Error):
    pass


class DeviceUnavailable(Phi3Error):
    """The device is a real one, but this machine does not have it."""


class InvalidOption(Phi3Error):
    pass


class EmptyPrompt(Phi3Error):
    pass


class PromptTooLong(Phi3Error):
    pass


class SessionBusy(Phi3Error):
    pass


class GenerationTimeout(Phi3Error):
    pass


class BuildInterrupted(Phi3Error):
    pass


class ExportFailed(Phi3Error):
    pass
