"""The subcommands of the ``qmamba`` CLI, one module each (see ``qmamba.cli.COMMANDS``)."""
