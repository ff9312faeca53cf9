"""The thin entry point every stage shares: bad input -> one clear message and exit status 1."""
import sys


class DataError(Exception):
    """Input the pipeline must reject; the message names the file, column and rows."""


def run_stage(main) -> None:
    try:
        main()
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
