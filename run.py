"""Entry point: `python run.py plan|apply|drift|revert|... --env ENV`. See README.md."""
import sys

from dmp_deploy.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
