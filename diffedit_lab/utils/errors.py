"""User-facing errors: one clear line and a non-zero exit instead of a traceback."""


class UserError(Exception):
    """A problem with the user's input, config, data or weights.

    The entry point prints ``error: <message>`` on one line and exits with code 2, so the message must say
    what was wrong and what to provide instead (a path, a layout, a config key).
    """


def missing_weights(what: str, source: str, hint: str = "") -> UserError:
    """The standard message for weights that cannot be found locally or on the hub (offline runs)."""
    msg = f"cannot load {what} from '{source}': not a local path and not in the Hugging Face cache"
    msg += " (offline? set HF_HUB_OFFLINE=0 with network, or point the config at a local copy)"
    if hint:
        msg += f"; {hint}"
    return UserError(msg)
