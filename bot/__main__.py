"""``python -m bot``: the same as the ``bot`` command."""

from bot.cli import main

if __name__ == "__main__":  # a spawned worker process re-imports this module: never re-run the CLI there
    main()
