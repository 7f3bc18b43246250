import os

from guardstream.cli import main

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
main()
