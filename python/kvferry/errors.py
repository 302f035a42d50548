"""kvferry's exception type (its own module so that the C++ module can raise it)."""


class Error(Exception):
    """A kvferry error.

    ``code`` is kvferry's error code by name (``"timed_out"``, ``"invalid_argument"``,
    ``"duplicate_request_id"``, ...: the names of ``kvferry::errc``); ``message`` says what went
    wrong, naming the key, block or request concerned.
    """

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
