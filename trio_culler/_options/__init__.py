"""The command line and config file of ``jupyterhub-idle-culler`` 1.x and 2.0, read into plain values.

Both generations of syntax are accepted, because deployments generated for either exist:

- ``--opt=value`` and ``--opt value``; ``--cull_every`` as well as ``--cull-every`` (1.x, tornado);
  ``--IdleCuller.timeout=600`` (2.0, traitlets);
- boolean options with no value mean true (``--cull-users``), which 2.0 rejects and 1.x accepted;
  ``--no-cull-users`` means false; values ``true/false/1/0/yes/no/on/off`` in any case;
- ``--logging=debug`` (1.x) alongside ``--log-level=DEBUG`` and ``--debug``.

A config file is Python assigning ``c.IdleCuller.<option> = value`` (2.0's format); ``get_config()`` returns
``c``, as in traitlets config files. Command-line values override the file.

One module per job: ``_table`` (the options), ``_values`` (converters from text), ``_argv`` (the command line),
``_config_file`` (the ``c`` object and the file), ``_rules_file`` (``--rules-file``), ``_text_file`` (reading
either file as UTF-8), ``_render`` (``--help`` and ``--generate-config``).

How to add an option
--------------------
Add one line to ``OPTIONS`` in ``_table.py``, keyed by its dashed name; the lexer, the config file, ``--help``
and ``--generate-config`` all pick it up from there::

    "warn-before": value("Seconds before a cull to warn the user; 0: no warning.", FLOAT, 0),
    "explain": action("Print why each server would or would not be culled, then exit."),
    "status-page": switch("Serve the status page.", default=False),

- ``value(help, convert, default)`` takes a value; ``convert`` is one of ``_values``' converters
  (``TEXT``, ``INT``, ``FLOAT``, ...) or a new ``(text, option_name) -> value`` function there that raises
  ``ConfigError`` naming the option. ``switch(help, default=...)`` is true/false with a ``--no-`` form.
  ``action(help)`` is command-line only (``--help``, ``--once``).
- ``dest`` is the option's name with underscores (``warn_before``), unless the row says ``dest=...``: it is the
  ``c.IdleCuller.<dest>`` key and the key in the parsed values. ``cli.read_settings`` passes a ``dest`` that is
  a ``Config`` field to ``Config``; any other ``dest`` must be a field of ``cli.Settings``.
- ``configurable=False`` keeps it out of config files; ``listed=False`` out of ``--help`` (compatibility aliases).
- Then document it in README.md's option list (``tests/test_operations.py`` refuses docs that use an option
  the table does not have).
"""

from ._argv import ParsedArgs as ParsedArgs
from ._argv import parse_args as parse_args
from ._config_file import load_config_file as load_config_file
from ._render import render_default_config as render_default_config
from ._render import render_help as render_help
from ._rules_file import load_rules_file as load_rules_file
from ._table import OPTIONS as OPTIONS
from ._table import Kind as Kind
from ._table import Option as Option
from ._table import action as action
from ._table import switch as switch
from ._table import value as value
from ._values import parse_bool as parse_bool

__all__ = [
    "OPTIONS",
    "Kind",
    "Option",
    "ParsedArgs",
    "action",
    "load_config_file",
    "load_rules_file",
    "parse_args",
    "parse_bool",
    "render_default_config",
    "render_help",
    "switch",
    "value",
]
