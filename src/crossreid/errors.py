"""User-facing errors: one clear line naming the problem and the fix, non-zero exit."""


class UserError(Exception):
    """Bad input from the user (path, config, file content).

    The CLI prints ``error: <message>`` on one line, without a traceback, and exits
    with code 2. The message should name the offending file or key and the fix.
    """

    exit_code = 2


class UserErrors(UserError):
    """Several problems of one input found in one pass (every bad row of a manifest, every bad
    line of an index file). The message names the first and how many more; ``problems`` holds
    them all, and ``crossreid check`` lists each."""

    def __init__(self, problems: list[str]):
        more = f" (and {len(problems) - 1} more; `crossreid check` lists them all)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)
        self.problems = list(problems)


def parse_assignment(item: str, what: str) -> tuple[str, object]:
    """``"key=value"`` into (key, value), the value parsed as a YAML scalar or list (``3``,
    ``true``, ``[rgb,depth]``; anything YAML cannot parse stays a string)."""
    import yaml

    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"{what} {item!r} is not of the form key=value")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        return key.strip(), value


def explain_validation(exc, model, source: str = "", prefix: str = "") -> UserError:
    """One line for the first error of a pydantic ``ValidationError`` raised by ``model``:
    ``<source>: unknown key '<prefix.key>'; did you mean ...?``, ``<source>: '<key>': <why>
    (got <value>); fix the value``, or for an error of the values together (no key)
    ``<source>: '<prefix>': <why>; fix the values``. An empty ``source`` is left out (the
    caller adds it)."""
    import difflib

    err = exc.errors()[0]
    loc = tuple(str(p) for p in err["loc"] if not isinstance(p, int))
    key = ".".join(p for p in (prefix, *loc) if p)
    lead = f"{source}: " if source else ""
    if not loc:
        msg = err["msg"].removeprefix("Value error, ")
        return UserError(f"{lead}{repr(key) + ': ' if key else ''}{msg}; fix the values")
    if err["type"] != "extra_forbidden":
        return UserError(f"{lead}'{key}': {err['msg']} (got {err.get('input')!r}); fix the value")
    for part in loc[:-1]:  # the model that holds the unknown key
        field = model.model_fields.get(part)
        model = getattr(field, "annotation", None) if field else None
        if not (isinstance(model, type) and hasattr(model, "model_fields")):
            return UserError(f"{lead}unknown key '{key}'")
    names = list(model.model_fields)
    close = difflib.get_close_matches(loc[-1], names, n=1)
    around = ".".join(loc[:-1])  # suggestions are spelt as the model spells them, without ``prefix``
    hint = f"did you mean '{around + '.' if around else ''}{close[0]}'?" if close else \
        f"valid keys here: {', '.join(names) or 'none'}"
    return UserError(f"{lead}unknown key '{key}'; {hint}")
