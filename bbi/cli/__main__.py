"""`python -m bbi.cli`: the same CLI, e.g. under `accelerate launch -m bbi.cli ...`."""

from bbi.cli import main

main()
