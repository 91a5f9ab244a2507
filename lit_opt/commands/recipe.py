"""``lit-opt recipe CONFIG [--key=value ...]``: run the end-to-end recipe (see :mod:`lit_opt.recipe`)."""

from __future__ import annotations

from lit_opt.recipe.config import RecipeConfig, valid_keys
from lit_opt.recipe.lm_config import CausalLMRecipeConfig

USAGE = (
    "usage: lit-opt recipe CONFIG [--key=value ...]\n\n"
    "Fine-tunes the teacher, distils, prunes and quantizes a student, measures every stage and writes\n"
    "<output_dir>/report.json, report.md and plots. Every config field can be overridden, e.g.\n"
    "  lit-opt recipe configs/recipes/rotten_tomatoes.yaml --data.path reviews.csv --output_dir outputs/mine\n"
    "--verbose shows third-party logs and warnings (transformers, datasets, Lightning), hidden by default.\n\n"
    "keys: "
)


def recipe_main(argv: list[str]) -> None:
    """Run the recipe from a YAML file and ``--key=value`` overrides (``argv`` follows ``recipe``).

    Example::

        >>> recipe_main(["configs/recipes/rotten_tomatoes.yaml", "--output_dir=outputs/rt"])  # doctest: +SKIP
    """
    from lit_opt.recipe import load_config, run_recipe
    from lit_opt.recipe.quiet import quiet

    if not argv or argv[0] in ("-h", "--help"):
        print(
            USAGE
            + ", ".join(valid_keys(RecipeConfig))
            + "\n\nkeys of task: causal_lm (configs/recipes/smollm2_rotten_tomatoes.yaml): "
            + ", ".join(valid_keys(CausalLMRecipeConfig))
        )
        if not argv:
            raise SystemExit(2)
        return
    verbose = "--verbose" in argv
    overrides = [a for a in argv[1:] if a != "--verbose"]
    with quiet(verbose):
        run_recipe(load_config(argv[0], overrides))
