"""``lit-opt recipe``: the end-to-end job, from a pretrained teacher to a compressed, faster student and its report.

Example::

    from lit_opt.recipe import load_config, run_recipe
    report = run_recipe(load_config("configs/recipes/rotten_tomatoes.yaml", ["--data.path=reviews.csv"]))
"""

from lit_opt.recipe.config import RecipeConfig, load_config
from lit_opt.recipe.run import run_recipe

__all__ = ["RecipeConfig", "load_config", "run_recipe"]
