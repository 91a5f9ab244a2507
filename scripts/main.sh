#!/usr/bin/env bash
# The main job: install (scripts/install.sh), then run the recipe on the embedded default
# (all-MiniLM-L6-v2 fine-tuned on the Rotten Tomatoes critic snippets -> distilled 3-layer student
# -> structured pruning + int8 QAT + int4 embeddings over the pruned vocabulary -> export), beside
# the torch.ao PTQ peer. Writes outputs/recipe_rotten_tomatoes/{report.md,report.json,*.png}.
# Extra arguments override the config, e.g. --data.path reviews.csv --output_dir outputs/mine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install.sh
exec .venv/bin/lit-opt recipe configs/recipes/rotten_tomatoes.yaml "$@"
