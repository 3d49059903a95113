"""Run the CLI as a script: `spark-submit jobs/__main__.py score --date D`."""

from jobs.cli import main

if __name__ == "__main__":
    main()
