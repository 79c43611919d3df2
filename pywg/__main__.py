"""`python -m pywg`: the command line in pywg/cli/."""

from pywg.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
