"""The pools' one failure that moderation handles: no answer from the actors in time. Here, apart
from Ray, so that moderation can catch it without importing Ray."""


class GenUnavailable(RuntimeError):
    pass


class StreamUnavailable(RuntimeError):
    pass
