"""The thin entry point every stage shares: bad input -> one clear message and exit status 65.

65 is EX_DATAERR (sysexits.h): it tells the Prefect flow that the data, not the machine, is at
fault, so the stage is not retried. Any other failure keeps Python's traceback and status 1.
"""
import sys

DATA_ERROR = 65


class DataError(Exception):
    """Input the pipeline must reject; the message names the file, column and rows."""


def run_stage(main) -> None:
    try:
        main()
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(DATA_ERROR)
