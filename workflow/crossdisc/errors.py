"""The one error type users see: a single line naming the file, the record and what is wrong."""


class InputError(Exception):
    """Bad input data or configuration. The CLI prints it as one line and exits with status 1."""

    def __init__(self, path, problem, record=None):
        self.path, self.problem, self.record = str(path), problem, record
        where = f"{self.path}: {record}" if record is not None else self.path
        super().__init__(f"{where}: {problem}")

    def __reduce__(self):  # so that an error raised in a worker process crosses to its parent
        return type(self), (self.path, self.problem, self.record)


class ConfigError(Exception):
    """A config that cannot run: one line naming the key (`config: tasks.x.source: unknown source 'y'`)."""

    def __init__(self, key, problem):
        self.key, self.problem = key, problem
        super().__init__(f"config: {key}: {problem}")
