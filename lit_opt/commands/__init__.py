"""lit_opt's own ``lit-opt`` subcommands, one per file; registered in :mod:`lit_opt.cli`."""
