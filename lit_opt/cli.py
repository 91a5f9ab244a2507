"""The ``lit-opt`` command line: LightningCLI's ``fit``/``validate``/``test``/``predict`` plus lit_opt's own.

Every subcommand reads the same YAML sections (``model``, ``data``, ``trainer``, ``optimizer``,
``lr_scheduler``, ``seed_everything``). Models and data modules are given by ``class_path`` (any
``LightningModule`` / ``LightningDataModule``), and callbacks such as ``lit_opt.QATCallback`` go under
``trainer.callbacks`` like any Lightning callback.

Adding a subcommand
-------------------
Write a function whose first three parameters are ``model``, ``datamodule`` and ``trainer`` (the CLI
fills them from the config) and whose other parameters are typed, YAML-writable options; its docstring's
first paragraph is the help text. Register it in :data:`EXTRA_SUBCOMMANDS` (or in ``extra_subcommands`` of a
``LitOptCLI`` subclass)::

    def export_command(
        model: LightningModule, datamodule: LightningDataModule | None, trainer: Trainer,
        dirpath: str = "outputs/export", ckpt_path: str | None = None,
    ) -> None:
        '''Write the compressed artifact of a trained model.'''
        ...

    EXTRA_SUBCOMMANDS["export"] = export_command

``lit-opt export --config c.yaml --dirpath out/`` then parses ``c.yaml`` as ``fit`` does and calls
``export_command(model=..., datamodule=..., trainer=..., dirpath="out/", ckpt_path=None)``. An option named
``ckpt_path`` gets LightningCLI's handling: hyperparameters saved in the checkpoint fill the ``model`` section.

Adding a standalone subcommand
------------------------------
A subcommand that needs no model, data or trainer (``bench``) parses its own arguments: write a function
``fn(argv: list[str]) -> None`` that receives the arguments after the subcommand's name (typically
``argparse`` or ``jsonargparse`` inside) and whose docstring's first paragraph is the help text, and register
it in :data:`STANDALONE_SUBCOMMANDS`. :func:`main` runs it before LightningCLI is built; ``lit-opt --help``
lists it beside the others::

    STANDALONE_SUBCOMMANDS["bench"] = bench_main   # lit-opt bench ARTIFACT --batch-sizes 1,8
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from jsonargparse import class_from_function
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

from lit_opt.commands.bench import bench_main
from lit_opt.commands.export import export_command
from lit_opt.commands.recipe import recipe_main

log = logging.getLogger(__name__)

#: Parameters of an extra subcommand that the CLI fills from the parsed config instead of the command line.
INJECTED_ARGUMENTS: tuple[str, ...] = ("model", "datamodule", "trainer")

#: lit_opt's subcommands beyond LightningCLI's, by name. See the module docstring for the contract.
EXTRA_SUBCOMMANDS: dict[str, Callable[..., Any]] = {"export": export_command}

#: Subcommands that take no config and parse their own arguments, by name: ``fn(argv_after_name)``.
STANDALONE_SUBCOMMANDS: dict[str, Callable[[list[str]], None]] = {"bench": bench_main, "recipe": recipe_main}


def _short_description(fn: Callable[..., Any]) -> str:
    """The first paragraph of ``fn``'s docstring on one line: the subcommand's help text."""
    doc = (inspect.getdoc(fn) or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def _check_extra_subcommand(name: str, fn: Callable[..., Any]) -> None:
    if name in LightningCLI.subcommands():
        raise ValueError(
            f"extra subcommand {name!r} clashes with LightningCLI's own subcommands "
            f"{sorted(LightningCLI.subcommands())}; choose another name."
        )
    params = list(inspect.signature(fn).parameters)
    if tuple(params[: len(INJECTED_ARGUMENTS)]) != INJECTED_ARGUMENTS:
        raise TypeError(
            f"extra subcommand {name!r} has parameters {params}; expected it to start with "
            f"{list(INJECTED_ARGUMENTS)}, which the CLI fills from the config."
        )


class LitOptCLI(LightningCLI):
    """LightningCLI with lit_opt's defaults and room for extra subcommands.

    Defaults that differ from ``LightningCLI``: ``model`` and ``data`` are chosen by ``class_path`` (subclass
    mode), and the saved ``config.yaml`` overwrites an earlier one in the same log directory. Any other
    ``LightningCLI`` argument can still be passed.

    Args:
        *args: Positional arguments of ``LightningCLI``.
        **kwargs: Keyword arguments of ``LightningCLI``.

    Example::

        >>> cli = LitOptCLI(args=["fit", "--config", "configs/digits_mlp.yaml"], run=False)  # doctest: +SKIP
    """

    #: Subcommands beyond LightningCLI's. A subclass may replace this mapping with its own.
    extra_subcommands: ClassVar[Mapping[str, Callable[..., Any]]] = EXTRA_SUBCOMMANDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        argv = kwargs.get("args")
        argv = sys.argv[1:] if argv is None else argv
        if isinstance(argv, (list, tuple)) and argv and argv[0] in STANDALONE_SUBCOMMANDS:
            raise ValueError(
                f"{argv[0]!r} is a standalone subcommand that LitOptCLI does not run. "
                f"HINT: call lit_opt.cli.main({list(argv)!r}) or run `lit-opt {argv[0]} ...`."
            )
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(*args, **kwargs)

    @override
    @classmethod
    def subcommands(cls) -> dict[str, set[str]]:
        """LightningCLI's subcommands plus ``extra_subcommands``, each with the arguments the CLI fills in."""
        commands = LightningCLI.subcommands()
        for name, fn in cls.extra_subcommands.items():
            _check_extra_subcommand(name, fn)
            commands[name] = set(INJECTED_ARGUMENTS)
        return commands

    @override
    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        # As LightningCLI._add_subcommands, except that an extra subcommand's help comes from its function.
        self._subcommand_parsers: dict[str, LightningArgumentParser] = {}
        parser_subcommands = parser.add_subcommands()
        trainer_class = (
            self.trainer_class
            if isinstance(self.trainer_class, type)
            else class_from_function(self.trainer_class)
        )
        for subcommand in self.subcommands():
            fn = self.extra_subcommands.get(subcommand) or getattr(trainer_class, subcommand)
            description = _short_description(fn)
            subparser_kwargs = kwargs.get(subcommand, {})
            subparser_kwargs.setdefault("description", description)
            subcommand_parser = self._prepare_subcommand_parser(trainer_class, subcommand, **subparser_kwargs)
            self._subcommand_parsers[subcommand] = subcommand_parser
            parser_subcommands.add_subcommand(subcommand, subcommand_parser, help=description)
        for name, fn in STANDALONE_SUBCOMMANDS.items():
            # listed in `lit-opt --help` only: main() runs these before LightningCLI parses anything
            help_text = f"{_short_description(fn)} (see `lit-opt {name} --help`)"
            parser_subcommands.add_subcommand(
                name, LightningArgumentParser(description=help_text), help=help_text
            )

    @override
    def _prepare_subcommand_parser(
        self, klass: type, subcommand: str, **kwargs: Any
    ) -> LightningArgumentParser:
        fn = self.extra_subcommands.get(subcommand)
        if fn is None:
            return super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        parser = self.init_parser(**kwargs)
        self._add_arguments(parser)
        added = parser.add_function_arguments(fn, skip=set(INJECTED_ARGUMENTS))
        self._subcommand_method_arguments[subcommand] = added
        return parser

    @override
    def _run_subcommand(self, subcommand: str) -> None:
        fn = self.extra_subcommands.get(subcommand)
        if fn is None:
            super()._run_subcommand(subcommand)
            return
        options = {
            key: value
            for key, value in self.config_init[subcommand].items()
            if key in self._subcommand_method_arguments[subcommand]
        }
        log.info("running lit-opt %s with %s", subcommand, options)
        fn(model=self.model, datamodule=self.datamodule, trainer=self.trainer, **options)


def main(args: list[str] | None = None) -> None:
    """Runs ``lit-opt``; ``args`` replaces ``sys.argv[1:]`` (for calling it from Python).

    Args:
        args: Command line arguments, e.g. ``["fit", "--config", "configs/digits_mlp.yaml"]``.

    Example::

        >>> main(["fit", "--config", "configs/digits_mlp.yaml", "--trainer.max_epochs=1"])  # doctest: +SKIP
        >>> main(["bench", "artifacts/minilm-int8", "--batch-sizes", "1,8"])  # doctest: +SKIP
    """
    argv = sys.argv[1:] if args is None else list(args)
    if argv and argv[0] in STANDALONE_SUBCOMMANDS:
        STANDALONE_SUBCOMMANDS[argv[0]](argv[1:])
        return
    LitOptCLI(args=args)


if __name__ == "__main__":
    main()
