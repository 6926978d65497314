"""`python -m phenexplain.cli` (torchrun's `-m` form) runs the console script."""

from phenexplain.cli import main

main()
