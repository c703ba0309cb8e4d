"""`python -m bbi.app.cli`: the same CLI, e.g. under `accelerate launch -m bbi.app.cli ...`."""

from bbi.app.cli import main

main()
