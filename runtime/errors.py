"""One error hierarchy for distilrt.

User errors (bad input, bad bundle, missing capability) carry a message that names the fix. Errors raised by
a backend library are translated with ``raise ... from e`` so the original stays in the traceback. Anything
else is a bug and is left to surface as itself.
"""


class DistilrtError(Exception):
    """Base of every error distilrt raises on purpose."""


class UserInputError(DistilrtError, ValueError):
    """The caller passed something unusable (empty question, text without a mask token, bad option)."""


class UnsupportedError(DistilrtError):
    """An architecture, task or option that distilrt does not support; the message lists what is supported."""


class CheckpointError(DistilrtError):
    """A checkpoint could not be found or loaded (missing weights, no tokenizer, hub unreachable)."""


class BundleError(DistilrtError):
    """A bundle is missing, incomplete, altered, or of a schema this runtime does not read."""


class CapabilityError(DistilrtError):
    """A needed library or device is missing; the message says what to install or where to run."""


class BackendError(DistilrtError):
    """The inference backend failed while loading or running a model."""


class ServerError(DistilrtError):
    """A model server refused or failed a request, could not be reached, or did not answer in time; the message
    is the server's own where it gave one."""


class ExportError(DistilrtError):
    """Exporting a checkpoint to ONNX failed."""


class VerificationError(DistilrtError):
    """A stage's outputs do not match its source within tolerance; the variant is not published.

    ``result`` holds the verification result (a dataclass that serializes to JSON) when there is one.
    """

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class BatchVarianceError(VerificationError):
    """A variant answers differently alone and in a mixed-length batch; it is not published.

    ``result`` holds its gate result (it passed the gate), ``invariance`` the failed check.
    """

    def __init__(self, message: str, result=None, invariance=None):
        super().__init__(message, result)
        self.invariance = invariance


class IncompatibleEngineError(CapabilityError):
    """A TensorRT engine was built for another GPU or TensorRT version than this machine has.

    ``machine`` holds what this machine offers (TensorRT module and version, GPU name and compute capability).
    """

    def __init__(self, message: str, machine=None):
        super().__init__(message)
        self.machine = machine


def one_line(error: BaseException) -> str:
    """An error's message on one line, for a CLI's one-line reason or a JSON field."""
    return " ".join(str(error).split())
