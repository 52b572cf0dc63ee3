"""One module per ``sana-stream`` command, each with ``add_arguments(parser)`` (which sets ``func``, the command's
run: parsed arguments -> exit status). ``sana_stream.cli`` imports a command's module only when that command is
parsed (or shows its help), so ``sana-stream camera`` never imports the server or the model stack."""
