"""The one exception type for user mistakes; the CLI turns it into exit code 2 and one line."""


class StylepressError(Exception):
    """A problem with the user's input (config, files, arguments), described in one line."""
