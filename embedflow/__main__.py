"""`python -m embedflow ...`: the same as the `embedflow` script (same entry point, same exit codes)."""

from embedflow.cli import run

if __name__ == "__main__":
    run()
