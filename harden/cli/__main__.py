"""``python -m harden.cli ...`` (also what ``torchrun -m harden.cli evaluate ...`` runs on each rank)."""

from harden.cli import main

if __name__ == "__main__":
    main(prog_name="harden")
