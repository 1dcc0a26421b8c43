"""Sub-commands of the `radialog` CLI: each module exposes `add_parser(subparsers)`.

The parser it adds sets `func`, called with the parsed arguments; it returns the exit code.
"""

COMMAND_MODULES: tuple[str, ...] = (
    "radialog.commands.report",
    "radialog.commands.serve",
    "radialog.commands.download",
    "radialog.commands.convert",
    "radialog.commands.check_release",
    "radialog.commands.export",
    "radialog.commands.train",
    "radialog.commands.label",
    "radialog.commands.evaluate",
    "radialog.commands.make_manifest",
    "radialog.commands.make_instruct",
    "radialog.commands.make_synthetic",
    "radialog.commands.params",
)
