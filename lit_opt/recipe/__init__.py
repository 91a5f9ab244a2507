"""``lit-opt recipe``: the end-to-end job, from a pretrained teacher to a compressed, faster student and its report.

The stages are shared (:mod:`lit_opt.recipe.run`); the config's ``task`` picks what fills them:
``classification`` (:mod:`lit_opt.recipe.classification`) or ``causal_lm`` (:mod:`lit_opt.recipe.causal_lm`).

Example::

    from lit_opt.recipe import load_config, run_recipe
    report = run_recipe(load_config("configs/recipes/rotten_tomatoes.yaml", ["--data.path=reviews.csv"]))
    report = run_recipe(load_config("configs/recipes/smollm2_rotten_tomatoes.yaml", ["--data.path=notes.txt"]))
"""

from lit_opt.recipe.config import RecipeConfig, load_config
from lit_opt.recipe.run import run_recipe

__all__ = ["RecipeConfig", "load_config", "run_recipe"]
